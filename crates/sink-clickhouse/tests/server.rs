//! The writer against the real ClickHouse server of the local stack (`IOTFLOW_TEST_CLICKHOUSE_URL`,
//! default `http://127.0.0.1:8123`; `bash deploy/local/start.sh` starts it). Here that is
//! Debian's 18.16; the modern-server branch of each test runs when pointed at a 22.2+ server.

use std::sync::Arc;
use std::time::Duration;

use iotflow_model::{Decimal, DeviceInfo, Enriched, NaiveDateTime, Reading, SourceRef};
use iotflow_sink::BatchWriter;
use iotflow_sink_clickhouse::{prepare, Capabilities, ClickhouseConfig, ClickhouseWriter};

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
                event_time: at(1_744_329_600 + i, i % 1000),
                pboxid: format!("box-{}", i % 7),
                metric: scaled(1_234_567_890_123 + i as i128),
                latitude: scaled(3_123_041_600),
                longitude: scaled(12_147_370_001),
                source: SourceRef {
                    partition: (i % 3) as i32,
                    offset: i,
                },
                kafka_ts_ms: Some(1_744_329_600_007),
            },
            device: Some(Arc::new(DeviceInfo {
                pboxid: format!("box-{}", i % 7),
                company: Some("ACME".into()),
                work_threshold: Some(scaled(5_000_000_000)),
                ..DeviceInfo::default()
            })),
        })
        .collect()
}

/// A fresh database for one test.
async fn database(name: &str) -> (clickhouse::Client, String) {
    let db = format!("iotflow_ch_{name}_{}", std::process::id());
    let admin = clickhouse::Client::default()
        .with_url(url())
        .with_validation(false);
    admin
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .unwrap_or_else(|e| panic!("cannot reach ClickHouse at {} ({e}); start the local stack: bash deploy/local/start.sh", url()));
    admin
        .query(&format!("CREATE DATABASE {db}"))
        .execute()
        .await
        .unwrap();
    (admin.with_database(&db), db)
}

#[tokio::test]
async fn dedup_tokens_follow_the_servers_version() {
    let (client, db) = database("tokens").await;
    let prepared = prepare(&config(&db), 1).await.unwrap();
    assert_eq!(
        prepared.capabilities(),
        Capabilities::of(prepared.version())
    );
    let batch = rows(500);
    let mut writer =
        ClickhouseWriter::new(prepared.client().clone(), "iot_data").with_dedup_tokens(true);
    if prepared.capabilities().dedup_tokens {
        // The same batch twice (a retry whose first answer was lost): the server drops the
        // second block, so even a plain count() is exact.
        writer.write(&batch).await.unwrap();
        writer.write(&batch).await.unwrap();
        let n: u64 = client
            .query("SELECT count() FROM iot_data")
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(n, 500);
    } else {
        // An old server does not know the setting and refuses the insert: why the sink only
        // sends tokens where the version offers them.
        let e = writer.write(&batch).await.unwrap_err();
        assert!(!e.is_transient(), "{e}");
        assert!(e.to_string().contains("insert_deduplication_token"), "{e}");
        let mut plain = ClickhouseWriter::new(prepared.client().clone(), "iot_data");
        plain.write(&batch).await.unwrap();
        plain.write(&batch).await.unwrap();
        let (all, exact): (u64, u64) = (
            client
                .query("SELECT count() FROM iot_data")
                .fetch_one()
                .await
                .unwrap(),
            client
                .query("SELECT count() FROM iot_data FINAL")
                .fetch_one()
                .await
                .unwrap(),
        );
        assert_eq!(
            exact, 500,
            "FINAL counts each reading once on every version"
        );
        assert!(all >= 500);
    }
    client
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .unwrap();
}
