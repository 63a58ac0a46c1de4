//! How the writer behaves when ClickHouse is slow, hung or still loading its tables: each is a
//! transient error (the sink operator retries it with backoff), never a hang and never a
//! stopped job. Against the real server of the local stack (`IOTFLOW_TEST_CLICKHOUSE_URL`,
//! default `http://127.0.0.1:8123`; `bash deploy/local/start.sh`), except where a test says it
//! uses a stand-in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iotflow_model::{Decimal, DeviceInfo, Enriched, NaiveDateTime, Reading, SourceRef};
use iotflow_sink::BatchWriter;
use iotflow_sink_clickhouse::{prepare, ClickhouseConfig, ClickhouseWriter};

fn url() -> String {
    std::env::var("IOTFLOW_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// The wall time `secs` (read as UTC) plus `ms` milliseconds.
fn at(secs: i64, ms: i64) -> NaiveDateTime {
    NaiveDateTime::parse_from_str("1970-01-01 00:00:00", "%Y-%m-%d %H:%M:%S").unwrap()
        + Duration::from_millis((secs * 1000 + ms) as u64)
}

/// A decimal from its value × 10^8 (as the columns store it).
fn scaled(v: i128) -> Decimal {
    Decimal::from_i128_with_scale(v, 8)
}

/// The sink's section of the config, on database `db`.
fn config(db: &str) -> ClickhouseConfig {
    ClickhouseConfig {
        url: url(),
        database: db.into(),
        ..ClickhouseConfig::default()
    }
}

fn rows(n: i64) -> Vec<Enriched> {
    (0..n)
        .map(|i| Enriched {
            reading: Reading {
                event_time: at(1_744_329_600 + i, 125),
                pboxid: format!("box-{}", i % 7),
                metric: scaled(1_234_567_890_123 + i as i128),
                latitude: scaled(3_123_041_600),
                longitude: scaled(12_147_370_001),
                source: SourceRef {
                    partition: 0,
                    offset: i,
                },
                kafka_ts_ms: None,
            },
            device: Some(Arc::new(DeviceInfo {
                pboxid: format!("box-{}", i % 7),
                company: Some("ACME".into()),
                work_threshold: None,
                ..DeviceInfo::default()
            })),
        })
        .collect()
}

/// A fresh database for one test: a client on it and its name.
async fn database(name: &str) -> (clickhouse::Client, String) {
    let db = format!(
        "iotflow_ch_{name}_{}_{:08x}",
        std::process::id(),
        rand_suffix()
    );
    let admin = clickhouse::Client::default()
        .with_url(url())
        .with_validation(false);
    admin
        .query(&format!("CREATE DATABASE {db}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("cannot reach ClickHouse at {} ({e}); start the local stack: bash deploy/local/start.sh", url()));
    (admin.with_database(&db), db)
}

/// Distinct enough for concurrently running test binaries (no rand dependency here).
fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

async fn drop_database(client: &clickhouse::Client, db: &str) {
    client
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap();
}

async fn count_final(client: &clickhouse::Client, table: &str) -> u64 {
    client
        .query(&format!("SELECT count() FROM {table} FINAL"))
        .fetch_one()
        .await
        .unwrap()
}

/// A server that restarted answers `Code: 60` (UNKNOWN_TABLE) for a table it has not loaded
/// yet. Modelled here by the table not existing yet on the real server: the insert fails as
/// transient (the job would retry, not stop), and once the table is there the same writer
/// succeeds.
#[tokio::test]
async fn an_unknown_table_is_transient_and_the_write_succeeds_once_it_exists() {
    let (client, db) = database("unknown_table").await;
    let mut writer = ClickhouseWriter::new(client.clone(), "iot_data");
    let batch = rows(20);
    let e = writer.write(&batch).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("Code: 60"), "{e}");

    prepare(&config(&db), 1).await.unwrap();
    writer.write(&batch).await.unwrap();
    assert_eq!(count_final(&client, "iot_data").await, 20);
    drop_database(&client, &db).await;
}

/// The real server made slow: a materialized view on the table calls `sleep(3)` for each
/// inserted block, so the server answers an insert only after 3 s. With a 500 ms write timeout
/// the write returns a transient error naming the table and the timeout well before the server
/// answers; without the view the same batch is written again and counted once (`FINAL`), even
/// if the server finished the abandoned insert.
#[tokio::test]
async fn an_insert_slower_than_the_timeout_is_abandoned_as_transient() {
    let (client, db) = database("slow_insert").await;
    let prepared = prepare(&config(&db), 1).await.unwrap();
    client
        .query("CREATE MATERIALIZED VIEW slow ENGINE = Memory AS SELECT src_offset, sleep(3) AS slept FROM iot_data")
        .execute()
        .await
        .unwrap();
    let limit = Duration::from_millis(500);
    let mut writer =
        ClickhouseWriter::new(prepared.client().clone(), "iot_data").with_timeout(limit);
    let batch = rows(30);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), writer.write(&batch))
        .await
        .expect("the write did not return within 20 s");
    let took = started.elapsed();
    let e = result.expect_err("the write should have timed out: the server sleeps 3 s");
    assert!(e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("inserting 30 rows into ClickHouse table `iot_data`")
            && text.contains("no answer within 500ms")
            && text.contains("clickhouse.write_timeout_ms"),
        "{text}"
    );
    assert!(
        took >= limit && took < Duration::from_millis(2500),
        "returned after {took:?}: the timeout did not cut the 3 s insert"
    );

    client.query("DROP TABLE slow").execute().await.unwrap();
    writer.write(&batch).await.unwrap();
    assert_eq!(count_final(&client, "iot_data").await, 30);
    drop_database(&client, &db).await;
}

/// A hung server, played by a **stand-in**: a loopback TCP listener that accepts connections
/// and never reads or answers (a real ClickHouse cannot be made to hang like that on demand).
/// The write returns a transient timeout error instead of waiting forever.
#[tokio::test]
async fn a_server_that_never_answers_is_a_transient_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            held.push(socket); // kept open, never read
        }
    });
    let client = clickhouse::Client::default()
        .with_url(format!("http://{address}"))
        .with_validation(false);
    let limit = Duration::from_millis(300);
    let mut writer = ClickhouseWriter::new(client, "iot_data").with_timeout(limit);
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(20), writer.write(&rows(5)))
        .await
        .expect("the write did not return within 20 s: no write timeout")
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("no answer within 300ms"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
