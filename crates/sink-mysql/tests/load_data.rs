//! `mysql.write_method = "load_data"` (and `"insert"`, and several connections per worker)
//! against a real MariaDB (or MySQL) server.
//!
//! The server is read from `IOTFLOW_TEST_MYSQL_URL`, by default
//! `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow` (`source deploy/local/env.sh`). When no
//! server answers, the tests fail and say so. Each test creates its own database
//! `<db>_t_<random>` and drops it at the end.
//!
//! `local_infile=OFF` is not produced on the server: `SET GLOBAL local_infile = 0` needs SUPER
//! (which the test user lacks) and would break every other test loading data on the shared
//! server at the same time. The start-up check is tested against the values a server returns
//! (`load_data::tests::local_infile_values`, unit test) and here against the real server's ON.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime};
use iotflow_config::{MysqlConfig, MysqlWriteMethod};
use iotflow_sink::{BatchWriter, RejectRecorder, Rejected, Rejects};
use iotflow_sink_mysql::encoder::encode_insert;
use iotflow_sink_mysql::load_data::check_local_infile;
use iotflow_sink_mysql::{prepare, prepare_opts, MysqlWriter, Row, WriteStats};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool};
use rust_decimal::Decimal;

mod common;
use common::*;

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn time(d: u32, ms: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2025, 4, d)
        .unwrap()
        .and_hms_milli_opt(8, 30, 15, ms)
        .unwrap()
}

/// A realistic reading row (as the job writes them).
fn row(src_partition: i32, src_offset: i64) -> Row {
    Row {
        event_time: time(10 + (src_offset % 3) as u32, (src_offset % 1000) as u32),
        pboxid: format!("pbox-{:05}", src_offset % 10_000),
        metric: Decimal::new(src_offset * 12_345 + 7, 4),
        latitude: dec("31.23045678"),
        longitude: dec("121.47370123"),
        company: Some("ACME Manufacturing".into()),
        site: Some("Shanghai".into()),
        line: Some(format!("L{}", src_offset % 8)),
        device_name: Some(format!("press {src_offset}")),
        model: Some("X-1000".into()),
        device_status: Some("working".into()),
        work_threshold: Some(dec("10.5")),
        src_partition,
        src_offset,
        kafka_ts_ms: Some(1_744_273_815_123 + src_offset),
    }
}

/// Every stored column of `iot_data` but `ingested_at`, decimals as `Decimal`.
type Stored = (
    NaiveDateTime,
    String,
    Decimal,
    Decimal,
    Decimal,
    (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    ),
    Option<Decimal>,
    i32,
    i64,
    Option<NaiveDateTime>,
);

/// What `row` should read back as: decimals at the column scale, times at milliseconds.
fn expected(r: &Row) -> Stored {
    let scale = |d: Decimal| {
        let mut d =
            d.round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        d.rescale(8);
        d
    };
    let t = r.texts();
    (
        r.event_time,
        r.pboxid.clone(),
        scale(r.metric),
        scale(r.latitude),
        scale(r.longitude),
        (
            t[0].clone(),
            t[1].clone(),
            t[2].clone(),
            t[3].clone(),
            t[4].clone(),
            t[5].clone(),
        ),
        r.work_threshold.map(scale),
        r.src_partition,
        r.src_offset,
        r.kafka_ts_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.naive_utc()),
    )
}

async fn stored(conn: &mut Conn, table: &str) -> Vec<Stored> {
    let raw: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT event_time, pboxid, metric, latitude, longitude, company, site, line, \
             device_name, model, device_status, work_threshold, src_partition, src_offset, \
             kafka_ts FROM `{table}` ORDER BY src_partition, src_offset"
        ))
        .await
        .expect("read back");
    raw.into_iter()
        .map(|mut r| {
            let mut take = |i: usize| r.take::<mysql_async::Value, _>(i).unwrap();
            use mysql_async::from_value as v;
            (
                v(take(0)),
                v(take(1)),
                v(take(2)),
                v(take(3)),
                v(take(4)),
                (
                    v(take(5)),
                    v(take(6)),
                    v(take(7)),
                    v(take(8)),
                    v(take(9)),
                    v(take(10)),
                ),
                v(take(11)),
                v(take(12)),
                v(take(13)),
                v(take(14)),
            )
        })
        .collect()
}

async fn count(conn: &mut Conn, table: &str) -> u64 {
    conn.query_first(format!("SELECT COUNT(*) FROM `{table}`"))
        .await
        .unwrap()
        .unwrap()
}

/// A reject sink that keeps what it is given.
fn collecting() -> (Rejects, Arc<Mutex<Vec<Rejected>>>) {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = kept.clone();
    let rejects: Rejects = Arc::new(move |r| {
        sink.lock().unwrap().push(r);
        Box::pin(async { Ok(()) })
    });
    (rejects, kept)
}

async fn pool_for(opts: &Opts, table: &str) -> Pool {
    prepare_opts(opts.clone(), table, true, 8)
        .await
        .expect("prepare")
}

/// Rows whose values stress the text format: tabs, newlines, backslashes, a literal `\N`,
/// quotes, NUL, carriage returns, non-ASCII, empty strings, NULLs, decimals with every scale
/// and sign.
fn awkward_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let texts: [(&str, Option<&str>); 8] = [
        ("tab\there", Some("new\nline")),
        ("back\\slash\\", Some(r"\N")),
        (r"\N", None),
        ("quote ' and \"double\"", Some("")),
        ("nul\0byte and cr\r", Some("\\t is not a tab")),
        ("温度 ✓ 🔥", Some("émigré")),
        ("", Some("trailing backslash \\")),
        ("x';DROP TABLE iot_data;--", Some("\\\\\\")),
    ];
    let decimals = [
        "0",
        "-0.00000001",
        "12345678.12345678",
        "-9999999999999999.99999999",
        "0.123456785", // rounds to 0.12345679, as the INSERT path rounds it
        "42",
        "1e-8",
        "3.14159265",
    ];
    for (i, ((pbox, text), metric)) in texts.iter().zip(decimals).enumerate() {
        let mut r = row(1, i as i64);
        r.pboxid = pbox.to_string();
        r.company = text.map(str::to_string);
        r.site = None;
        r.metric = Decimal::from_scientific(metric)
            .or_else(|_| Decimal::from_str(metric))
            .unwrap();
        r.latitude = dec("-89.99999999");
        r.longitude = dec("179.00000001");
        r.work_threshold = if i % 2 == 0 { None } else { Some(dec("-0.5")) };
        r.kafka_ts_ms = if i % 3 == 0 { None } else { r.kafka_ts_ms };
        rows.push(r);
    }
    rows
}

#[tokio::test]
async fn load_data_stores_every_value_exactly_as_insert_does() {
    with_scratch_db(|opts| async move {
        let pool = pool_for(&opts, "iot_data").await;
        prepare_opts(opts.clone(), "iot_data_insert", true, 1)
            .await
            .expect("prepare the second table");
        let rows = awkward_rows();
        let mut loader =
            MysqlWriter::new(pool.clone(), "iot_data").with_method(MysqlWriteMethod::LoadData);
        loader.write(&rows).await.expect("load");
        assert_eq!(
            loader.stats(),
            WriteStats {
                loads_committed: 1,
                ..WriteStats::default()
            },
            "written by LOAD DATA, not by a fallback"
        );
        let mut inserter =
            MysqlWriter::new(pool.clone(), "iot_data_insert").with_method(MysqlWriteMethod::Insert);
        inserter.write(&rows).await.expect("insert");
        assert_eq!(inserter.stats().parts_inserted, 1);

        let mut conn = connect(opts.clone()).await;
        let loaded = stored(&mut conn, "iot_data").await;
        let want: Vec<Stored> = rows.iter().map(expected).collect();
        assert_eq!(loaded, want);
        assert_eq!(loaded, stored(&mut conn, "iot_data_insert").await);
        // Spot checks of what the comparison means.
        assert_eq!(loaded[2].1, r"\N");
        assert_eq!(loaded[2].5 .0, None);
        assert_eq!(loaded[3].5 .0.as_deref(), Some(""));
        assert_eq!(loaded[4].2.to_string(), "0.12345679");
        assert_eq!(loaded[3].2.to_string(), "-9999999999999999.99999999");
        conn.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn load_data_reads_its_escapes_right_in_sessions_opened_with_no_backslash_escapes() {
    with_scratch_db(|opts| async move {
        // As in tests/prepare.rs: an `init` command opens each session the way a server whose
        // global sql_mode has NO_BACKSLASH_ESCAPES would. The statement's `'\t'` and `'\\'`
        // (and the data's escapes) only mean what they should because the pool takes the mode
        // out again.
        let hostile: Opts = OptsBuilder::from_opts(opts.clone())
            .init(vec![
                "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')",
            ])
            .into();
        let pool = prepare_opts(hostile, "iot_data", true, 2)
            .await
            .expect("prepare");
        let rows = awkward_rows();
        let mut writer =
            MysqlWriter::new(pool.clone(), "iot_data").with_method(MysqlWriteMethod::LoadData);
        writer.write(&rows).await.expect("load");
        assert_eq!(writer.stats().loads_committed, 1);
        let mut conn = connect(opts.clone()).await;
        let want: Vec<Stored> = rows.iter().map(expected).collect();
        assert_eq!(stored(&mut conn, "iot_data").await, want);
        conn.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn a_replayed_load_duplicates_nothing_and_keeps_the_first_write() {
    with_scratch_db(|opts| async move {
        let pool = pool_for(&opts, "iot_data").await;
        // More rows than the default max_error_count (64): the replay's duplicate warnings
        // must all be listed to be proven duplicates.
        let first: Vec<Row> = (0..500).map(|o| row(2, o)).collect();
        let mut writer =
            MysqlWriter::new(pool.clone(), "iot_data").with_method(MysqlWriteMethod::LoadData);
        writer.write(&first).await.expect("first load");

        // The replay carries other values under the same keys, and 100 new rows.
        let replay: Vec<Row> = (0..600)
            .map(|o| {
                let mut r = row(2, o);
                r.metric = dec("-1");
                r.company = Some("overwritten".into());
                r
            })
            .collect();
        writer.write(&replay).await.expect("replay");
        assert_eq!(
            writer.stats(),
            WriteStats {
                loads_committed: 2,
                ..WriteStats::default()
            },
            "a replay is committed by LOAD DATA, its warnings being only duplicate keys"
        );

        let mut conn = connect(opts.clone()).await;
        assert_eq!(count(&mut conn, "iot_data").await, 600);
        let got = stored(&mut conn, "iot_data").await;
        let want: Vec<Stored> = first.iter().chain(&replay[500..]).map(expected).collect();
        assert_eq!(got, want, "the first write of every key is kept");
        conn.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn a_bad_row_in_a_load_lands_the_good_rows_and_is_rejected_as_insert_rejects_it() {
    with_scratch_db(|opts| async move {
        let pool = pool_for(&opts, "iot_data").await;
        prepare_opts(opts.clone(), "iot_data_insert", true, 1)
            .await
            .expect("prepare the second table");
        // A schema changed by hand: values the sink's own checks accept no longer fit, so only
        // the server can tell (LOAD DATA ... IGNORE would store them cut, with a warning).
        let mut conn = connect(opts.clone()).await;
        for table in ["iot_data", "iot_data_insert"] {
            conn.query_drop(format!(
                "ALTER TABLE `{table}` MODIFY company VARCHAR(10) NULL"
            ))
            .await
            .unwrap();
        }
        let mut rows: Vec<Row> = (0..40).map(|o| row(3, o)).collect();
        for r in &mut rows {
            r.company = Some("ACME".into());
        }
        rows[17].company = Some("ACME Manufacturing".into());
        // A replayed row in the same batch as the bad one: its duplicate warning must not hide
        // the other.
        let writer = |table: &str, method| {
            let (rejects, kept) = collecting();
            let w = MysqlWriter::new(pool.clone(), table)
                .with_method(method)
                .with_rejects(RejectRecorder::none("mysql").to(rejects));
            (w, kept)
        };
        let (mut loader, load_rejects) = writer("iot_data", MysqlWriteMethod::LoadData);
        loader.write(&rows[..5]).await.expect("first five");
        loader.write(&rows).await.expect("batch with a bad row");
        assert_eq!(loader.stats().loads_committed, 1);
        assert_eq!(loader.stats().loads_rolled_back, 1);
        assert_eq!(loader.stats().parts_inserted, 1);

        let (mut inserter, insert_rejects) = writer("iot_data_insert", MysqlWriteMethod::Insert);
        inserter
            .write(&rows)
            .await
            .expect("insert batch with a bad row");

        let loaded = load_rejects.lock().unwrap().clone();
        let inserted = insert_rejects.lock().unwrap().clone();
        assert_eq!(loaded.len(), 1, "{loaded:?}");
        assert_eq!(
            (loaded[0].src_partition, loaded[0].src_offset),
            (3, 17),
            "{loaded:?}"
        );
        assert!(
            loaded[0].reason.contains("1406") && loaded[0].reason.contains("company"),
            "{}",
            loaded[0].reason
        );
        let key = |r: &Rejected| {
            (
                r.src_partition,
                r.src_offset,
                r.kafka_ts_ms,
                r.document.clone(),
                r.reason.clone(),
            )
        };
        assert_eq!(
            loaded.iter().map(key).collect::<Vec<_>>(),
            inserted.iter().map(key).collect::<Vec<_>>(),
            "LOAD DATA reports the bad row as INSERT does"
        );
        assert_eq!(
            (loaded[0].target.as_str(), inserted[0].target.as_str()),
            ("iot_data", "iot_data_insert")
        );
        for table in ["iot_data", "iot_data_insert"] {
            let got = stored(&mut conn, table).await;
            let want: Vec<Stored> = rows
                .iter()
                .filter(|r| r.src_offset != 17)
                .map(expected)
                .collect();
            assert_eq!(got, want, "{table}: every good row, none cut");
        }
        conn.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn write_method_insert_still_writes_and_replays_idempotently() {
    with_scratch_db(|opts| async move {
        let pool = pool_for(&opts, "iot_data").await;
        let rows: Vec<Row> = (0..300).map(|o| row(4, o)).collect();
        let mut writer =
            MysqlWriter::new(pool.clone(), "iot_data").with_method(MysqlWriteMethod::Insert);
        writer.write(&rows).await.expect("insert");
        let mut replay = rows.clone();
        for r in &mut replay {
            r.metric = dec("-1");
        }
        writer.write(&replay).await.expect("replay");
        assert_eq!(
            writer.stats(),
            WriteStats {
                parts_inserted: 2,
                ..WriteStats::default()
            }
        );
        let mut conn = connect(opts.clone()).await;
        let want: Vec<Stored> = rows.iter().map(expected).collect();
        assert_eq!(stored(&mut conn, "iot_data").await, want);
        conn.disconnect().await.ok();
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn several_connections_write_one_batch_in_parts_for_both_methods() {
    with_scratch_db(|opts| async move {
        let pool = pool_for(&opts, "iot_data").await;
        for (method, partition) in [
            (MysqlWriteMethod::LoadData, 5),
            (MysqlWriteMethod::Insert, 6),
        ] {
            let rows: Vec<Row> = (0..2001).map(|o| row(partition, o)).collect();
            let mut writer = MysqlWriter::new(pool.clone(), "iot_data")
                .with_method(method)
                .with_connections(4);
            writer.write(&rows).await.expect("write in parts");
            writer.write(&rows).await.expect("replay in parts");
            let stats = writer.stats();
            match method {
                MysqlWriteMethod::LoadData => assert_eq!(
                    stats,
                    WriteStats {
                        loads_committed: 8,
                        ..WriteStats::default()
                    }
                ),
                MysqlWriteMethod::Insert => assert_eq!(
                    stats,
                    WriteStats {
                        parts_inserted: 8,
                        ..WriteStats::default()
                    }
                ),
            }
            let mut conn = connect(opts.clone()).await;
            let got: Vec<Stored> = stored(&mut conn, "iot_data")
                .await
                .into_iter()
                .filter(|s| s.7 == partition)
                .collect();
            let want: Vec<Stored> = rows.iter().map(expected).collect();
            assert_eq!(got.len(), 2001);
            assert_eq!(got, want);
            conn.disconnect().await.ok();
        }
        pool.disconnect().await.ok();
    })
    .await;
}

#[tokio::test]
async fn prepare_with_load_data_checks_local_infile_on_the_real_server() {
    with_scratch_db(|opts| async move {
        // The local stack's MariaDB has local_infile ON (its default; deploy/local/start.sh
        // also says so explicitly): the check passes and the connector writes by LOAD DATA.
        let mut conn = connect(opts.clone()).await;
        assert_eq!(
            check_local_infile(&mut conn, "test").await.expect("query"),
            Ok(()),
            "the test server must have local_infile=ON"
        );
        conn.disconnect().await.ok();
        let url = format!(
            "mysql://{}:{}@{}:{}/{}",
            opts.user().unwrap_or("iotflow"),
            opts.pass().unwrap_or(""),
            opts.ip_or_hostname(),
            opts.tcp_port(),
            opts.db_name().unwrap()
        );
        let config = MysqlConfig {
            url,
            connections_per_worker: 3,
            ..MysqlConfig::default()
        };
        assert_eq!(config.write_method, MysqlWriteMethod::LoadData);
        let connector = prepare(&config, 2).await.expect("prepare");
        // Two workers with three writing connections each, one more each, two spare.
        assert!(
            connector.pool().get_conn().await.is_ok(),
            "the pool answers"
        );
        connector.pool().clone().disconnect().await.ok();
    })
    .await;
}

/// Rows per second of `writer` writing `rows` in batches of `batch`.
async fn rate(mut writer: MysqlWriter, rows: &[Row], batch: usize) -> f64 {
    let start = Instant::now();
    for chunk in rows.chunks(batch) {
        writer.write(chunk).await.expect("write");
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

/// MariaDB's own multi-row INSERT rate on `connections` connections, as benchmark 3b measures
/// it: the rows pre-encoded into 1 000-row `INSERT ... ON DUPLICATE KEY UPDATE` statements,
/// only the statements timed, each connection sending its share back to back.
async fn raw_insert_rate(pool: &Pool, table: &str, rows: &[Row], connections: usize) -> f64 {
    let statements: Vec<String> = rows
        .chunks(1000)
        .map(|chunk| {
            let mut sql = String::new();
            encode_insert(table, chunk, &mut sql);
            sql
        })
        .collect();
    let shares: Vec<Vec<String>> = (0..connections)
        .map(|c| {
            statements
                .iter()
                .skip(c)
                .step_by(connections)
                .cloned()
                .collect()
        })
        .collect();
    let mut conns = Vec::new();
    for _ in 0..connections {
        conns.push(pool.get_conn().await.unwrap());
    }
    let start = Instant::now();
    futures_util::future::join_all(conns.into_iter().zip(shares).map(
        |(mut conn, share)| async move {
            for sql in share {
                conn.query_drop(sql).await.expect("raw insert");
            }
        },
    ))
    .await;
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

/// `cargo test -p iotflow-sink-mysql --release --test load_data -- --ignored --nocapture rates`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a test: run by hand"]
async fn rates() {
    with_scratch_db(|opts| async move {
        const ROWS: i64 = 100_000;
        const BATCH: usize = 2000; // mysql.batch.max_rows
        let rows: Vec<Row> = (0..ROWS).map(|o| row((o % 8) as i32, o)).collect();
        let mut results = Vec::new();
        for round in 0..2 {
            let table = format!("raw_{round}");
            let pool = pool_for(&opts, &table).await;
            // The day partitions first, as the sink would have made them.
            MysqlWriter::new(pool.clone(), &table)
                .write(&rows[..3])
                .await
                .unwrap();
            let r = raw_insert_rate(&pool, &table, &rows, 2).await;
            results.push((
                format!("MariaDB multi-row INSERT, 2 connections (round {round})"),
                r,
            ));
            pool.disconnect().await.ok();
            for (method, connections) in [
                (MysqlWriteMethod::LoadData, 1),
                (MysqlWriteMethod::LoadData, 2),
                (MysqlWriteMethod::Insert, 1),
                (MysqlWriteMethod::Insert, 2),
            ] {
                let table = format!("t_{}_{connections}_{round}", method.as_str());
                let pool = pool_for(&opts, &table).await;
                let writer = MysqlWriter::new(pool.clone(), &table)
                    .with_method(method)
                    .with_connections(connections);
                let r = rate(writer, &rows, BATCH).await;
                let mut conn = pool.get_conn().await.unwrap();
                assert_eq!(count(&mut conn, &table).await, ROWS as u64);
                drop(conn);
                results.push((
                    format!(
                        "sink {} on {connections} connection(s) (round {round})",
                        method.as_str()
                    ),
                    r,
                ));
                pool.disconnect().await.ok();
            }
        }
        println!("{ROWS} rows, batches of {BATCH}:");
        for (what, r) in results {
            println!("  {what:<60} {r:>10.0} rows/s");
        }
    })
    .await;
}
