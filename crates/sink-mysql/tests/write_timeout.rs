//! The writer's per-write timeout against a real MariaDB (or MySQL) server: a write that hangs
//! on the server fails as transient within the timeout, and is retried safely once the server
//! answers again.
//!
//! The server is read from `IOTFLOW_TEST_MYSQL_URL`, by default
//! `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow` (`bash deploy/local/start.sh`). The test
//! creates its own database `<db>_t_<random>` and drops it at the end.

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use iotflow_config::MysqlConfig;
use iotflow_sink::BatchWriter;
use iotflow_sink_mysql::{prepare, MysqlWriter, Row};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use rust_decimal::Decimal;

const DEFAULT_URL: &str = "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow";

fn base_url() -> String {
    std::env::var("IOTFLOW_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

async fn connect(url: &str) -> Conn {
    let opts = Opts::from_url(url).expect("IOTFLOW_TEST_MYSQL_URL is a valid URL");
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "cannot reach MariaDB at {url} ({e}); start the local stack: bash deploy/local/start.sh"
        ),
        Err(_) => panic!(
            "MariaDB at {url} did not answer within 10 s; start the local stack: bash deploy/local/start.sh"
        ),
    }
}

fn rows(n: i64) -> Vec<Row> {
    let at =
        NaiveDateTime::parse_from_str("2025-04-10 08:00:00.125", "%Y-%m-%d %H:%M:%S%.f").unwrap();
    (0..n)
        .map(|i| Row {
            event_time: at + chrono::Duration::seconds(i),
            pboxid: format!("pbox-{}", i % 7),
            metric: Decimal::new(i * 125 + 1, 3),
            latitude: Decimal::from_str("31.23045678").unwrap(),
            longitude: Decimal::from_str("121.47370123").unwrap(),
            company: Some("ACME".into()),
            site: None,
            line: None,
            device_name: None,
            model: None,
            device_status: None,
            work_threshold: None,
            src_partition: 0,
            src_offset: i,
            kafka_ts_ms: None,
        })
        .collect()
}

/// A table lock held by another session makes the INSERT wait on the server (MariaDB's
/// `lock_wait_timeout` is a day by default, so without the writer's own timeout the write
/// would hang that long). With a 500 ms timeout the write returns a transient error naming the
/// table and the timeout, within about that time; once the lock is gone the same batch is
/// written again and the table holds each row once (the abandoned INSERT, if the server still
/// ran it, is overwritten by the idempotent retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_blocked_by_a_table_lock_times_out_as_transient_and_the_retry_succeeds() {
    let base = base_url();
    let mut admin = connect(&base).await;
    let db = format!(
        "{}_t_timeout_{:08x}",
        Opts::from_url(&base)
            .unwrap()
            .db_name()
            .unwrap_or("iotflow"),
        rand::random::<u32>()
    );
    admin
        .query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {db} (needs ALL on `<db>\\_%`): {e}"));
    let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);

    let test = async move {
        let config = MysqlConfig {
            url: url.clone(),
            ..MysqlConfig::default()
        };
        // One worker: a pool of 4 connections.
        let pool = prepare(&config, 1).await.unwrap().pool().clone();
        let batch = rows(50);
        let limit = Duration::from_millis(500);
        let mut writer = MysqlWriter::new(pool.clone(), "iot_data").with_timeout(limit);
        // The day partition exists after this first write, so the blocked step below is the
        // INSERT itself.
        writer.write(&batch[..10]).await.unwrap();

        let mut locker = connect(&url).await;
        locker
            .query_drop("LOCK TABLES iot_data WRITE")
            .await
            .unwrap();
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(20), writer.write(&batch))
            .await
            .expect("the write did not return within 20 s: no write timeout");
        let took = started.elapsed();
        let e = result.expect_err("the write succeeded while the table was locked");
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("writing 50 rows into MySQL table `iot_data`")
                && text.contains("no answer within 500ms")
                && text.contains("mysql.write_timeout_ms"),
            "the message says what timed out: {text}"
        );
        assert!(
            took >= limit && took < Duration::from_secs(5),
            "returned after {took:?}, not about {limit:?}"
        );

        locker.query_drop("UNLOCK TABLES").await.unwrap();
        writer.write(&batch).await.unwrap();
        let n: Option<u64> = locker
            .query_first("SELECT COUNT(*) FROM iot_data")
            .await
            .unwrap();
        assert_eq!(n, Some(50), "every row once");
        locker.disconnect().await.unwrap();
        drop(writer);
        pool.disconnect().await.unwrap();
    };
    // Drop the database whatever happened.
    let outcome = tokio::spawn(test).await;
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
    admin.disconnect().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
