//! Bad input never panics a worker and never costs the good records around it.

mod common;

use std::time::Duration;

use common::*;
use iotflow_gen::publish_devices;
use iotflow_model::DeviceInfo;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const SQL_ID: &str = "'; DROP TABLE iot_data; --";
const QUOTES_ID: &str = r#"a"b\c'd`e"#;

fn reading(id: &str, metric: &str) -> Vec<u8> {
    let id = serde_json_string(id);
    format!(r#"{{"event_time":"2025-04-10 08:00:00.500","metric":{metric},"pboxid":{id},"latitude":31.23,"longitude":121.47}}"#)
        .into_bytes()
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[test]
fn bad_records_go_to_the_dead_letter_topic_and_nothing_else_is_lost() {
    let f = Fixture::new("bad-input", 2);
    publish_devices(
        &brokers(),
        &f.broadcast,
        &[DeviceInfo {
            pboxid: SQL_ID.into(),
            company: Some("O'Reilly \\ \"Quoted\" 设备".into()),
            ..Default::default()
        }],
    )
    .unwrap();
    let big = {
        let mut v = br#"{"event_time":"2025-04-10 08:00:00","metric":1,"latitude":1,"longitude":1,"pboxid":""#.to_vec();
        v.resize(1 << 20, b'x');
        v.extend_from_slice(b"\"}");
        v
    };
    // (payload, valid?)
    let records: Vec<(Vec<u8>, bool)> = vec![
        (reading("good-1", "51.5"), true),
        (vec![0xff, 0x00, 0xfe, 0x13, 0x37, 0x80, 0x81], false),
        (big, false),
        (reading("wrong-type", "\"lots\""), false),
        (br#"{"event_time":"2025-04-10 08:00:00","metric":1,"pboxid":"p","latitude":"north","longitude":1}"#.to_vec(), false),
        (reading(SQL_ID, "12345678.12345678"), true),
        (reading(QUOTES_ID, "-0.5"), true),
        (Vec::new(), false),
        (b"null".to_vec(), false),
        (reading("good-2", "99"), true),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    for (i, (payload, _)) in records.iter().enumerate() {
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

    let child = f
        .job(2, free_port())
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "3")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(120));
    assert!(ok, "job failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let rows: Vec<(String, String, Option<String>)> =
        f.query("SELECT pboxid, CAST(metric AS CHAR), company FROM iot_data ORDER BY pboxid");
    let want_valid = records.iter().filter(|r| r.1).count();
    assert_eq!(rows.len(), want_valid, "{rows:?}");
    assert!(
        rows.contains(&(
            SQL_ID.to_string(),
            "12345678.12345678".into(),
            Some("O'Reilly \\ \"Quoted\" 设备".into())
        )),
        "{rows:?}"
    );
    assert!(
        rows.contains(&(QUOTES_ID.to_string(), "-0.50000000".into(), None)),
        "{rows:?}"
    );

    let letters = f.dead_letters(records.len() - want_valid);
    assert_eq!(letters.len(), records.len() - want_valid);
    let by_code = |code: &str| {
        letters
            .iter()
            .filter(|l| l.2["iotflow.reason_code"] == code)
            .collect::<Vec<_>>()
    };
    let too_large = by_code("too_large");
    assert_eq!(too_large.len(), 1);
    assert_eq!(
        too_large[0].1.len(),
        64 * 1024,
        "payload kept up to the limit"
    );
    assert_eq!(too_large[0].2["iotflow.truncated"], "true");
    assert!(too_large[0].2["iotflow.reason"].contains("exceeds the limit"));
    assert_eq!(by_code("invalid_json").len(), 1, "garbage");
    assert_eq!(by_code("not_object").len(), 1, "null");
    assert!(
        by_code("invalid_json").iter().any(|l| l.1 == records[1].0),
        "original bytes kept"
    );
    assert_eq!(by_code("wrong_type").len(), 2);
    assert!(by_code("wrong_type")
        .iter()
        .any(|l| l.2["iotflow.reason"].contains("`latitude` must be a number")));
    assert_eq!(by_code("empty").len(), 1);
}

#[test]
fn unreachable_database_at_start_is_a_clear_error() {
    let f = Fixture::new("no-db", 1);
    let port = free_port(); // nothing listens there
    let child = f
        .job(1, free_port())
        .env(
            "IOTFLOW__MYSQL__URL",
            format!("mysql://iotflow:s3cret@127.0.0.1:{port}/iotflow"),
        )
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(60));
    assert!(!ok, "must fail");
    assert!(
        stderr.contains(&format!(
            "cannot connect to MySQL at mysql://iotflow:***@127.0.0.1:{port}/iotflow"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "password leaked:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn wrong_credentials_are_a_clear_error() {
    let f = Fixture::new("bad-auth", 1);
    let url = f.db_url.replacen("iotflow:iotflow@", "iotflow:wrong@", 1);
    let child = f
        .job(1, free_port())
        .env("IOTFLOW__MYSQL__URL", url)
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(60));
    assert!(!ok, "must fail");
    assert!(stderr.contains("Access denied"), "{stderr}");
    assert!(!stderr.contains("wrong@"), "password leaked:\n{stderr}");
}

#[test]
fn unknown_config_key_is_an_error_naming_it() {
    let f = Fixture::new("bad-config", 1);
    let child = f
        .job(1, free_port())
        .env("IOTFLOW__MYSQL__BATCH__MAX_ROWZ", "5")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(30));
    assert!(!ok);
    assert!(
        stderr.contains("max_rowz") && stderr.contains("IOTFLOW__MYSQL__BATCH__MAX_ROWZ"),
        "{stderr}"
    );
}

#[test]
fn a_definite_write_error_stops_the_job_with_the_servers_message() {
    let f = Fixture::new("definite", 1);
    // A table the job did not create, without the kafka_ts column its inserts name.
    let _: Vec<u8> = f.query(
        "CREATE TABLE iot_data (event_time DATETIME(3) NOT NULL, pboxid VARCHAR(64) NOT NULL, \
         metric DECIMAL(24,8), latitude DECIMAL(11,8), longitude DECIMAL(11,8), company VARCHAR(128), \
         site VARCHAR(128), line VARCHAR(128), device_name VARCHAR(128), model VARCHAR(128), \
         device_status VARCHAR(32), work_threshold DECIMAL(24,8), src_partition INT NOT NULL, \
         src_offset BIGINT NOT NULL, PRIMARY KEY (src_partition, src_offset, event_time)) \
         PARTITION BY RANGE COLUMNS(event_time) (PARTITION pmax VALUES LESS THAN (MAXVALUE))",
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to(&f.topic)
                .key("k")
                .payload(&reading("d-1", "1")[..]),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();

    let child = f.job(1, free_port()).spawn().unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(60));
    assert!(!ok, "must fail");
    assert!(
        stderr.contains("mysql sink") && stderr.contains("kafka_ts"),
        "{stderr}"
    );
    assert!(stderr.contains("offsets were not committed"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn more_workers_than_partitions_still_reads_everything() {
    // Two of the three workers own no partition and finish at once; that must not stop the
    // third before it has read its partition.
    let f = Fixture::new("idle-workers", 1);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for i in 0..2000 {
        let payload = reading(&format!("w-{}", i % 7), &format!("{i}.5"));
        producer
            .send(BaseRecord::to(&f.topic).key("k").payload(&payload[..]))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let child = f
        .job(3, free_port())
        .env("IOTFLOW__JOB__IDLE_EXIT_SECS", "3")
        .spawn()
        .unwrap();
    let (ok, stderr) = finish(child, Duration::from_secs(120));
    assert!(ok, "job failed:\n{stderr}");
    assert_eq!(f.row_count(), 2000);
}
