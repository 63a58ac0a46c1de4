//! The start-up check (`prepare`) and the sessions of the pool it returns, against a real
//! MariaDB (or MySQL) server.
//!
//! The server is read from `IOTFLOW_TEST_MYSQL_URL`, by default
//! `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow` (`bash deploy/local/start.sh` provides it).
//! When no server answers, the tests fail and say so: they never pass silently. Each test that
//! writes creates its own database `<db>_t_<random>` and drops it at the end.
//!
//! # How a server with `NO_BACKSLASH_ESCAPES` is stood in for
//!
//! What matters is the mode a connection of the sink's pool starts with. The honest ways to make
//! a server hand out such sessions all reach beyond one test: `SET GLOBAL sql_mode` (needs
//! SUPER, which the test user rightly lacks, and changes every new session of every test running
//! concurrently on the shared server), `init_connect` (global as well), a per-user default (MySQL
//! and MariaDB have none: `ALTER USER` cannot set `sql_mode`), or a second server. Instead the
//! tests give the pool an `init` command that adds `NO_BACKSLASH_ESCAPES` to the session.
//! mysql_async runs `init` commands on each new connection right after the handshake and before
//! the pool's `setup` commands, which is exactly where a server's global mode would be in force:
//! from the sink's point of view the session is the same. (After `COM_RESET_CONNECTION` a session
//! goes back to the server's global mode; mysql_async runs the `setup` commands again after each
//! reset, `Conn::reset` in mysql_async 0.37 `src/conn/mod.rs`, so that path uses the same
//! statement; it cannot be exercised without changing the global mode.)

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use chrono::NaiveDate;
use iotflow_config::MysqlConfig;
use iotflow_sink::BatchWriter;
use iotflow_sink_mysql::{prepare, prepare_opts, MysqlWriter, Row};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use rust_decimal::Decimal;

const DEFAULT_URL: &str = "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow";

/// Adds `NO_BACKSLASH_ESCAPES` to a fresh session, as a server whose global mode has it would.
const START_WITH_NO_BACKSLASH_ESCAPES: &str =
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')";

fn server_opts() -> Opts {
    let url = std::env::var("IOTFLOW_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    Opts::from_url(&url)
        .unwrap_or_else(|e| panic!("IOTFLOW_TEST_MYSQL_URL is not a valid URL: {e}"))
}

async fn connect(opts: impl Into<Opts>) -> Conn {
    let opts = opts.into();
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", unreachable_message(&opts, &e.to_string())),
        Err(_) => panic!("{}", unreachable_message(&opts, "no answer within 10 s")),
    }
}

fn unreachable_message(opts: &Opts, error: &str) -> String {
    format!(
        "cannot reach MariaDB at {}:{}: {error}\n\
         These integration tests need a real server. Start the local stack with\n    \
         bash deploy/local/start.sh\n\
         or point IOTFLOW_TEST_MYSQL_URL at a server (default {DEFAULT_URL}).",
        opts.ip_or_hostname(),
        opts.tcp_port()
    )
}

async fn sql_mode(conn: &mut Conn) -> String {
    conn.query_first("SELECT @@SESSION.sql_mode")
        .await
        .expect("read sql_mode")
        .unwrap_or_default()
}

fn has_no_backslash_escapes(mode: &str) -> bool {
    mode.split(',').any(|m| m == "NO_BACKSLASH_ESCAPES")
}

/// Run `test` with the options of a fresh database, dropped afterwards even if the test panics.
async fn with_scratch_db<F, Fut>(test: F)
where
    F: FnOnce(Opts) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = server_opts();
    let mut admin = connect(base.clone()).await;
    let name = format!(
        "{}_t_{:016x}",
        base.db_name().unwrap_or("iotflow"),
        rand::random::<u64>()
    );
    admin
        .query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create the scratch database {name} (the user needs ALL on `<db>\\_%`): {e}"
            )
        });
    let opts: Opts = OptsBuilder::from_opts(base).db_name(Some(&name)).into();
    let outcome = tokio::spawn(test(opts)).await;
    admin
        .query_drop(format!("DROP DATABASE `{name}`"))
        .await
        .unwrap_or_else(|e| panic!("cannot drop the scratch database {name}: {e}"));
    let _ = admin.disconnect().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The password `p@ss:/%word`, as it must be written in a URL.
const ENCODED: &str = "p%40ss%3A%2F%25word";
const DECODED: &str = "p@ss:/%word";

#[tokio::test]
async fn prepare_errors_never_show_a_percent_encoded_password() {
    let base = server_opts();
    // Make sure a server is there, so the failure below is the wrong password and not a missing
    // server (whose message would pass the test for the wrong reason).
    connect(base.clone()).await.disconnect().await.ok();
    let url = format!(
        "mysql://{}:{ENCODED}@{}:{}/{}",
        base.user().unwrap_or("iotflow"),
        base.ip_or_hostname(),
        base.tcp_port(),
        base.db_name().unwrap_or("iotflow")
    );
    let config = MysqlConfig {
        url,
        create_table: false,
        ..MysqlConfig::default()
    };
    let error = prepare(&config, 0)
        .await
        .map(drop)
        .expect_err("a wrong password must fail the start")
        .to_string();
    assert!(
        error.contains("Access denied"),
        "expected the server's refusal of the password, got: {error}"
    );
    assert!(
        error.contains(":***@"),
        "the URL is shown redacted: {error}"
    );
    for secret in [ENCODED, DECODED, "%40ss", "p@ss"] {
        assert!(!error.contains(secret), "{secret:?} in: {error}");
    }
}

fn row(src_offset: i64, pboxid: &str, texts: [&str; 5]) -> Row {
    let text = |i: usize| Some(texts[i].to_string());
    Row {
        event_time: NaiveDate::from_ymd_opt(2025, 4, 10)
            .unwrap()
            .and_hms_milli_opt(8, 0, 0, 5)
            .unwrap(),
        pboxid: pboxid.to_string(),
        metric: Decimal::from_str("12.5").unwrap(),
        latitude: Decimal::from_str("31.23045678").unwrap(),
        longitude: Decimal::from_str("121.47370123").unwrap(),
        company: text(0),
        site: text(1),
        line: text(2),
        device_name: text(3),
        model: text(4),
        device_status: Some("work\\ing'".into()),
        work_threshold: None,
        src_partition: 0,
        src_offset,
        kafka_ts_ms: None,
    }
}

#[tokio::test]
async fn mysql_sink_stores_backslashes_and_quotes_exactly_under_no_backslash_escapes() {
    with_scratch_db(|opts| async move {
        let plain_mode = sql_mode(&mut connect(opts.clone()).await).await;
        let hostile: Opts = OptsBuilder::from_opts(opts.clone())
            .init(vec![START_WITH_NO_BACKSLASH_ESCAPES])
            .into();
        // The stand-in works: a session opened with it reads backslashes literally.
        let mut probe = connect(hostile.clone()).await;
        assert!(has_no_backslash_escapes(&sql_mode(&mut probe).await));
        let literal: Option<String> = probe.query_first(r"SELECT 'a\nb'").await.unwrap();
        assert_eq!(literal.as_deref(), Some(r"a\nb"));
        probe.disconnect().await.ok();

        let pool = prepare_opts(hostile, "iot_data", true, 3)
            .await
            .expect("prepare fixes the session mode instead of refusing the server");

        // Three connections at once: each is new, each got the init and then the sink's setup.
        // The mode is the server's, minus NO_BACKSLASH_ESCAPES and nothing else.
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(pool.get_conn().await.expect("pooled connection"));
        }
        for conn in &mut conns {
            assert_eq!(sql_mode(conn).await, plain_mode);
        }
        // A session someone changed does not come back out of the pool as it was left.
        let id = conns[0].id();
        conns[0]
            .query_drop("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
            .await
            .unwrap();
        drop(conns);
        // Dropped connections go back to the pool asynchronously (reset first); on a loaded
        // machine the next `get_conn` can overtake them, so poll until one comes back.
        let mut again = Vec::new();
        for _ in 0..100 {
            again.clear();
            for _ in 0..3 {
                again.push(pool.get_conn().await.expect("pooled connection"));
            }
            if again.iter().any(|c| c.id() == id) {
                break;
            }
            again.clear();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            again.iter().any(|c| c.id() == id),
            "the pool reused its connections"
        );
        for conn in &mut again {
            assert_eq!(sql_mode(conn).await, plain_mode);
        }
        drop(again);

        // Values that break out of a literal if backslashes are read as plain characters.
        let nasty = [
            r"it\'s",
            r"back\slash\\",
            r#"quote ' and "double""#,
            r"x\'); DROP TABLE iot_data; -- ",
            "trailing\\",
        ];
        let rows = vec![
            row(1, r"pbox\'1", nasty),
            row(2, "pbox';--", ["\\", "'", "\"", "\\\\'", "%_\\%\\_"]),
        ];
        let mut writer = MysqlWriter::new(pool.clone(), "iot_data");
        writer.write(&rows).await.expect("write");
        // Again on a reused connection, idempotently.
        writer.write(&rows).await.expect("write again");

        let mut reader = connect(opts.clone()).await;
        type Texts = (
            i64,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let stored: Vec<Texts> = reader
            .exec(
                "SELECT src_offset, pboxid, company, site, line, device_name, model, device_status \
                 FROM iot_data ORDER BY src_offset",
                (),
            )
            .await
            .unwrap();
        let expected: Vec<Texts> = rows
            .iter()
            .map(|r| {
                (
                    r.src_offset,
                    r.pboxid.clone(),
                    r.company.clone(),
                    r.site.clone(),
                    r.line.clone(),
                    r.device_name.clone(),
                    r.model.clone(),
                    r.device_status.clone(),
                )
            })
            .collect();
        assert_eq!(stored, expected);
        reader.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn prepare_still_creates_the_table_from_its_script() {
    with_scratch_db(|opts| async move {
        let pool = prepare_opts(opts.clone(), "readings_x", true, 1)
            .await
            .expect("prepare");
        let mut conn = pool.get_conn().await.unwrap();
        let partitions: Option<String> = conn
            .query_first(
                "SELECT GROUP_CONCAT(PARTITION_NAME) FROM information_schema.PARTITIONS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'readings_x'",
            )
            .await
            .unwrap();
        assert_eq!(partitions.as_deref(), Some("pmax"));
        drop(conn);
        // And again: the script only creates what is missing.
        prepare_opts(opts, "readings_x", true, 1)
            .await
            .expect("prepare twice")
            .disconnect()
            .await
            .ok();
        pool.disconnect().await.ok();
    })
    .await;
}
