//! Poison records: values the parser used to let through, readings outside the plausibility
//! window, JSON arrays, and rows the server itself refuses. Each must become a dead letter
//! with its reason while the job goes on, writes everything else and commits past it; a
//! second run finds nothing left to do.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn reading(id: &str, time: &str, metric: &str) -> Vec<u8> {
    format!(r#"{{"event_time":"{time}","metric":{metric},"pboxid":"{id}","latitude":31.23,"longitude":121.47}}"#)
        .into_bytes()
}

fn produce(f: &Fixture, records: &[Vec<u8>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for (i, payload) in records.iter().enumerate() {
        producer
            .send(
                BaseRecord::to(&f.topic)
                    .key(&format!("k{i}"))
                    .partition((i % 2) as i32)
                    .payload(&payload[..]),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

#[test]
fn poison_records_are_dead_lettered_and_the_stream_goes_on() {
    let f = Fixture::new("poison", 2);
    // The table exists with a pboxid column narrower than the parser's 64 characters (as if
    // altered by hand): a 20-character id passes the parser and the server refuses it (1406).
    runtime().block_on(async {
        use mysql_async::prelude::Queryable;
        let pool = mysql_async::Pool::new(f.db_url.as_str());
        let mut conn = pool.get_conn().await.unwrap();
        conn.query_drop(iotflow_sink_mysql::IOT_DATA_DDL)
            .await
            .unwrap();
        conn.query_drop("ALTER TABLE iot_data MODIFY pboxid VARCHAR(16) NOT NULL")
            .await
            .unwrap();
        drop(conn);
        pool.disconnect().await.unwrap();
    });
    let now = chrono::Utc::now().naive_utc();
    let at = |days: i64| {
        (now + chrono::TimeDelta::days(days))
            .format("%Y-%m-%d %H:%M:%S%.3f")
            .to_string()
    };
    let today = at(0);
    // (payload, reason code of its dead letter, or None when it must be stored)
    let records: Vec<(Vec<u8>, Option<&str>)> = vec![
        (reading("good-1", &today, "51.5"), None),
        // Below 1e16 as sent, 1e16 in DECIMAL(24,8): used to stop the job on every start.
        (
            reading("poison-metric", &today, "9999999999999999.999999995"),
            Some("out_of_range"),
        ),
        (
            reading("good-2", &today, "9999999999999999.999999994"),
            None,
        ),
        (
            format!(r#"["{today}", 51.5, "array", 31.2, 121.4]"#).into_bytes(),
            Some("not_object"),
        ),
        (reading("too-old", &at(-2), "1"), Some("out_of_window")),
        (reading("too-new", &at(3), "1"), Some("out_of_window")),
        (reading("old-but-ok", &at(-1), "2"), None),
        (
            reading("x-twenty-characters", &today, "3"),
            Some("mysql_rejected"),
        ),
        (reading("good-3", &today, "99"), None),
    ];
    let payloads: Vec<Vec<u8>> = records.iter().map(|r| r.0.clone()).collect();
    produce(&f, &payloads);

    let run = || {
        let child = f
            .job(2, free_port())
            .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "3")
            // A window of 1 day back, 2 days ahead (the fixture turns it off by default).
            .env("IOTFLOW__PARSE__MAX_EVENT_AGE_SECS", "129600")
            .env("IOTFLOW__PARSE__MAX_EVENT_LEAD_SECS", "172800")
            .env("IOTFLOW__MYSQL__CREATE_TABLE", "false")
            .spawn()
            .unwrap();
        finish(child, Duration::from_secs(120))
    };
    let (ok, stderr) = run();
    assert!(ok, "job failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let stored: Vec<String> = f.query("SELECT pboxid FROM iot_data ORDER BY pboxid");
    let mut want: Vec<String> = records
        .iter()
        .filter(|r| r.1.is_none())
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.0).unwrap();
            v["pboxid"].as_str().unwrap().to_string()
        })
        .collect();
    want.sort();
    assert_eq!(stored, want);
    let big: Vec<String> =
        f.query("SELECT CAST(metric AS CHAR) FROM iot_data WHERE pboxid = 'good-2'");
    assert_eq!(big, vec!["9999999999999999.99999999".to_string()]);

    let bad: Vec<&str> = records.iter().filter_map(|r| r.1).collect();
    let letters = f.dead_letters(bad.len());
    let mut codes: Vec<&str> = letters
        .iter()
        .map(|l| l.2["iotflow.reason_code"].as_str())
        .collect();
    codes.sort();
    let mut want_codes = bad.clone();
    want_codes.sort();
    assert_eq!(codes, want_codes, "one dead letter per poison record");
    let refused = letters
        .iter()
        .find(|l| l.2["iotflow.reason_code"] == "mysql_rejected")
        .unwrap();
    assert!(
        refused.2["iotflow.reason"].contains("1406")
            || refused.2["iotflow.reason"].contains("too long"),
        "the server's reason is kept: {:?}",
        refused.2
    );
    let document: serde_json::Value = serde_json::from_slice(&refused.1).unwrap();
    assert_eq!(document["pboxid"], "x-twenty-characters");
    let window = letters
        .iter()
        .find(|l| l.2["iotflow.reason_code"] == "out_of_window")
        .unwrap();
    assert!(
        window.2["iotflow.reason"].contains("outside the accepted window"),
        "{:?}",
        window.2
    );

    // Offsets moved on past every poison record: a second run reads nothing, writes nothing.
    let (ok, stderr) = run();
    assert!(ok, "second run failed:\n{stderr}");
    assert_eq!(f.row_count(), want.len() as u64);
    assert_eq!(
        f.dead_letters(bad.len()).len(),
        bad.len(),
        "no letter twice"
    );
}
