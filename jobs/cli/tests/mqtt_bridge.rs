//! MQTT ingest on real servers: Mosquitto → `iotflow mqtt-bridge` → the Kafka-protocol broker
//! → `iotflow run` → MariaDB. The bridge is SIGKILLed while the simulator publishes; every
//! reading must reach Kafka exactly once (the broker's redeliveries are told apart by the
//! bridge's ledger) and land in `iot_data` exactly once.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use iotflow_gen::{devices, publish_devices, GenOptions, Generator};
use iotflow_model::NaiveDateTime;

/// `iotflow mqtt-bridge` for `f`'s readings topic, subscribed to `filter` as `client_id`.
fn bridge(f: &Fixture, client_id: &str, filter: &str, metrics_port: u16) -> Command {
    let (host, port) = mqtt();
    let mut c = Command::new(env!("CARGO_BIN_EXE_iotflow"));
    c.arg("mqtt-bridge")
        .env("IOTFLOW__KAFKA__BROKERS", brokers())
        .env("IOTFLOW__KAFKA__TOPIC", &f.topic)
        .env("IOTFLOW__MQTT__HOST", host)
        .env("IOTFLOW__MQTT__PORT", port.to_string())
        .env("IOTFLOW__MQTT__CLIENT_ID", client_id)
        .env("IOTFLOW__MQTT__TOPICS", format!("[\"{filter}\"]"))
        .env(
            "IOTFLOW__MQTT__METRICS_LISTEN",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("IOTFLOW__MQTT__STATE_DIR", state_dir(client_id))
        .env("IOTFLOW_LOG", "info,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// The test's own ledger directory for a bridge.
fn state_dir(client_id: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("iotflow-test-{client_id}"))
}

/// Starts a bridge and waits until its subscription is acknowledged.
fn start_bridge(f: &Fixture, client_id: &str, filter: &str) -> (Reaped, u16) {
    let port = free_port();
    let mut child = Reaped::new(bridge(f, client_id, filter, port).spawn().unwrap());
    wait_for("the bridge's subscription", Duration::from_secs(60), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the bridge exited ({status}) before it subscribed");
        }
        let t = scrape(port)?;
        (metric_sum(&t, "iotflow_mqtt_subscribed", &[]) == 1.0).then_some(())
    });
    (child, port)
}

/// Readings published; at 2 000/s the simulator runs for 20 s, long enough for three kills
/// and restarts (a restart after a kill settles the ledger, up to 3 s of reading the topic back).
const READINGS: u64 = 40_000;

fn options() -> GenOptions {
    GenOptions {
        devices: 50,
        count: READINGS,
        seed: 11,
        start: NaiveDateTime::parse_from_str("2025-04-10 23:58:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    }
}

#[test]
fn readings_cross_the_bridge_through_sigkills_and_land_exactly_once() {
    let f = Fixture::new("mqtt-bridge", 4);
    let options = options();
    let want = expected_per_device(&options);
    let generated: BTreeSet<Vec<u8>> = Generator::new(options.clone()).map(|g| g.payload).collect();
    assert_eq!(
        generated.len(),
        READINGS as usize,
        "the generator's readings are distinct"
    );
    publish_devices(&brokers(), &f.broadcast, &devices(50, 11)).unwrap();

    let tag = format!("t{}", rand::random::<u32>());
    let client_id = format!("bridge-{tag}");
    let filter = format!("{tag}/pboxes/+/readings");
    // The first start makes the persistent session: from here on the broker keeps what the
    // bridge has not acknowledged.
    let (mut bridge_child, mut port) = start_bridge(&f, &client_id, &filter);

    let (host, mqtt_port) = mqtt();
    let mut gen = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_iotflow"))
            .args([
                "gen",
                "--mqtt",
                &format!("{host}:{mqtt_port}"),
                "--mqtt-topic",
                &format!("{tag}/pboxes/{{pboxid}}/readings"),
                "--devices",
                "50",
                "--count",
                &READINGS.to_string(),
                "--rate",
                "2000",
                "--seed",
                "11",
                "--start",
                "2025-04-10 23:58:00",
                "--no-devices",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    // Three SIGKILLs, each once the running bridge has forwarded 1500 messages, while the
    // simulator is still publishing; a new bridge takes the session straight away.
    for kill in 0..3 {
        wait_for("the bridge forwarding", Duration::from_secs(120), || {
            let t = scrape(port)?;
            (metric_sum(&t, "iotflow_mqtt_messages_forwarded_total", &[]) >= 1500.0).then_some(())
        });
        assert!(
            gen.try_wait().unwrap().is_none(),
            "the simulator finished before kill {kill}: the kill would not be mid-stream"
        );
        bridge_child.kill().unwrap();
        bridge_child.wait().unwrap();
        (bridge_child, port) = start_bridge(&f, &client_id, &filter);
    }
    let (ok, stderr) = finish(gen.take(), Duration::from_secs(120));
    assert!(ok, "the simulator failed:\n{stderr}");

    // Kafka holds every reading at least once, keyed by its device, with its MQTT topic.
    let (mut distinct, mut seen) = (BTreeSet::new(), 0);
    let records = read_topic(&f.topic, Duration::from_secs(180), |r| {
        distinct.extend(r[seen..].iter().map(|x| x.1.clone()));
        seen = r.len();
        distinct.len() >= generated.len()
    });
    let got: BTreeSet<Vec<u8>> = records.iter().map(|r| r.1.clone()).collect();
    let missing = generated.difference(&got).count();
    assert_eq!(missing, 0, "readings lost between MQTT and Kafka");
    assert_eq!(
        got.len(),
        generated.len(),
        "records that were never published"
    );
    // A little more time for a late duplicate to show up: the assertion below is on
    // everything the topic holds once the last bridge is idle.
    for (key, payload, headers) in &records {
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let id = v["pboxid"].as_str().unwrap();
        assert_eq!(key.as_deref(), Some(id), "the key is the payload's device");
        assert_eq!(headers["mqtt_topic"], format!("{tag}/pboxes/{id}/readings"));
    }
    // The last bridge is quiet: everything it took is acknowledged to both sides.
    let t = wait_for("the last bridge idle", Duration::from_secs(60), || {
        let t = scrape(port)?;
        (metric_sum(&t, "iotflow_mqtt_in_flight", &[]) == 0.0).then_some(t)
    });
    let records = read_topic(&f.topic, Duration::from_secs(10), |r| {
        r.len() > generated.len()
    });
    let duplicates = records.len() - got.len();
    eprintln!(
        "mqtt bridge: {} records in Kafka for {} readings after 3 SIGKILLs; the last bridge dropped {} redeliveries",
        records.len(),
        got.len(),
        metric_sum(&t, "iotflow_mqtt_duplicates_dropped_total", &[])
    );
    assert_eq!(duplicates, 0, "readings in Kafka twice");
    promtool_check_metrics(&t);
    // Every message this bridge took is acknowledged to MQTT: those Kafka took, and those
    // the ledger knew (redeliveries of what an earlier bridge had put in Kafka).
    assert_eq!(
        metric_sum(&t, "iotflow_mqtt_messages_forwarded_total", &[])
            + metric_sum(&t, "iotflow_mqtt_duplicates_dropped_total", &[])
            + metric_sum(&t, "iotflow_mqtt_retained_skipped_total", &[]),
        metric_sum(&t, "iotflow_mqtt_messages_acknowledged_total", &[]),
        "every message is acknowledged to MQTT"
    );
    assert_eq!(
        metric_sum(&t, "iotflow_mqtt_messages_unkeyed_total", &[]),
        0.0
    );
    assert_eq!(metric_sum(&t, "iotflow_mqtt_connected", &[]), 1.0);
    // `iotflow status` knows the bridge.
    let out = Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .args([
            "status",
            "--json",
            "--interval-ms",
            "300",
            "-e",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let process = &status["processes"][0];
    assert_eq!(process["kind"], "mqtt-bridge", "{status}");
    assert_eq!(process["mqtt_bridge"]["connected"], true, "{status}");
    assert_eq!(process["mqtt_bridge"]["in_flight"], 0.0, "{status}");
    sigterm(&bridge_child);
    let status = bridge_child.take().wait().unwrap();
    assert!(
        status.success(),
        "the bridge stops cleanly on SIGTERM: {status}"
    );

    // Downstream, the duplicates are absorbed: each reading is one row.
    let job_port = free_port();
    let job = Reaped::new(f.job(2, job_port).spawn().unwrap());
    let rows = want.values().map(|v| v.0).sum::<u64>();
    wait_for(
        "every reading in iot_data",
        Duration::from_secs(180),
        || (f.row_count() >= rows).then_some(()),
    );
    sigterm(&job);
    let (ok, stderr) = finish(job.take(), Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    assert_eq!(mysql_per_device(&f), want, "iot_data per device");
}

#[test]
fn a_device_id_missing_from_the_payload_comes_from_the_topic() {
    let f = Fixture::new("mqtt-topic-key", 1);
    let tag = format!("t{}", rand::random::<u32>());
    let port = free_port();
    let mut cmd = bridge(
        &f,
        &format!("bridge-{tag}"),
        &format!("{tag}/dev/+/up"),
        port,
    );
    cmd.args(["--max-messages", "4"]).env(
        "IOTFLOW__MQTT__DEVICE_ID_FROM_TOPIC",
        format!("{tag}/dev/{{pboxid}}/up"),
    );
    let mut child = Reaped::new(cmd.spawn().unwrap());
    wait_for("the bridge's subscription", Duration::from_secs(60), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the bridge exited ({status}) before it subscribed");
        }
        let t = scrape(port)?;
        (metric_sum(&t, "iotflow_mqtt_subscribed", &[]) == 1.0).then_some(())
    });
    let (host, mqtt_port) = mqtt();
    let messages = vec![
        (
            "p7".to_string(),
            br#"{"event_time":"2025-04-10 10:00:00","metric":1}"#.to_vec(),
        ),
        ("p8".to_string(), br#"{"pboxid":"p9","metric":2}"#.to_vec()),
        ("p5".to_string(), b"not json".to_vec()),
        // A device's resend (a new MQTT message with the same content): dropped.
        ("p8".to_string(), br#"{"pboxid":"p9","metric":2}"#.to_vec()),
    ];
    runtime()
        .block_on(iotflow_mqtt_bridge::publish(
            &host,
            mqtt_port,
            &format!("{tag}/dev/{{pboxid}}/up"),
            messages.into_iter(),
            0.0,
            |_| {},
        ))
        .unwrap();
    // --max-messages 4: the bridge stops by itself once all four are acknowledged.
    let status = wait_for("the bridge to stop", Duration::from_secs(60), || {
        child.try_wait().unwrap()
    });
    assert!(status.success(), "{status}");
    // Three records, not four: the wait runs out (10 s) unless a fourth came.
    let records = read_topic(&f.topic, Duration::from_secs(10), |r| r.len() > 3);
    assert_eq!(records.len(), 3, "the resend is not forwarded");
    let by_topic: BTreeMap<String, (Option<String>, serde_json::Value)> = records
        .into_iter()
        .map(|(k, p, h)| {
            let v = serde_json::from_slice(&p).unwrap_or(serde_json::Value::Null);
            (h["mqtt_topic"].clone(), (k, v))
        })
        .collect();
    let at = |id: &str| &by_topic[&format!("{tag}/dev/{id}/up")];
    assert_eq!(at("p7").0.as_deref(), Some("p7"));
    assert_eq!(
        at("p7").1,
        serde_json::json!({"pboxid": "p7", "event_time": "2025-04-10 10:00:00", "metric": 1})
    );
    // The payload's id wins (it is what the job reads); the topic's is only a fallback.
    assert_eq!(at("p8").0.as_deref(), Some("p9"));
    // Not JSON: forwarded unchanged and unkeyed, for the job to dead-letter with its reason.
    assert_eq!(at("p5").0, None);
    assert_eq!(at("p5").1, serde_json::Value::Null);
}
