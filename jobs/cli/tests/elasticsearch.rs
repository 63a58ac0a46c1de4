//! The Elasticsearch sink in the running job, against the **stand-in** server of crate
//! `iotflow-es-stand-in` (no Elasticsearch can be installed on this machine; the stand-in
//! speaks the documented `_bulk` format). Only the Elasticsearch sink is on: any subset of sinks
//! works. The stand-in throttles items (429), refuses whole requests (503) and rejects one
//! device's documents with a mapping error; the job must retry the first two until everything
//! is stored, dead-letter the third with the reason, and commit every offset.

mod common;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use common::*;
use iotflow_es_stand_in::StandIn;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use iotflow_model::{Decimal, NaiveDateTime};

/// Readings in the test, all produced before the job starts.
const COUNT: u64 = 20_000;

#[test]
fn throttling_outages_and_mapping_errors_end_stored_or_dead_lettered() {
    let f = Fixture::new("es-faults", 4);
    let options = GenOptions {
        devices: 50,
        count: COUNT,
        malformed_share: 0.01,
        unknown_share: 0.0,
        seed: 31,
        start: NaiveDateTime::parse_from_str("2025-04-10 23:59:00", "%Y-%m-%d %H:%M:%S").unwrap(),
        ..Default::default()
    };
    // The device whose documents the cluster refuses, and what must be stored.
    let mut refused_device = None;
    let (mut malformed, mut refused) = (0u64, 0u64);
    let mut want: BTreeMap<String, (u64, Decimal, Decimal, Decimal)> = BTreeMap::new();
    for g in Generator::new(options.clone()) {
        let Some(x) = g.expected else {
            malformed += 1;
            continue;
        };
        let bad = refused_device.get_or_insert_with(|| x.pboxid.clone());
        if *bad == x.pboxid {
            refused += 1;
            continue;
        }
        let e = want.entry(x.pboxid).or_default();
        e.0 += 1;
        e.1 += x.metric;
        e.2 += x.latitude;
        e.3 += x.longitude;
    }
    let refused_device = refused_device.unwrap();
    let valid = COUNT - malformed;
    assert!(refused > 0);

    let es = StandIn::spawn();
    {
        let mut s = es.state();
        s.items_429 = 500;
        s.requests_503 = 3;
        s.reject_pboxids.insert(refused_device.clone());
    }
    publish_devices(&brokers(), &f.broadcast, &devices(50, 31)).unwrap();
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();

    let port = free_port();
    let mut child = f
        .job(2, port)
        .envs(elasticsearch_env(&es.url))
        .env("IOTFLOW__MYSQL__ENABLED", "false")
        .env("IOTFLOW__ELASTICSEARCH__RETRY__INITIAL_BACKOFF_MS", "20")
        .spawn()
        .unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    let es_sink = "sink=\"elasticsearch\"";
    let text = wait_for("every offset committed", Duration::from_secs(120), || {
        let t = scrape_running(port, &mut child);
        let committed = metric_sum(
            &t,
            "iotflow_kafka_committed_offset",
            &[&label, "operator=\"kafka-source\""],
        ) as u64;
        (committed == COUNT).then_some(t)
    });
    let m = |name: &str, extra: &[&str]| {
        let mut filter = vec![label.as_str()];
        filter.extend_from_slice(extra);
        metric_sum(&text, name, &filter) as u64
    };
    // Rows acknowledged by the sink: stored or durably dead-lettered.
    assert_eq!(m("iotflow_sink_rows_written_total", &[es_sink]), valid);
    assert_eq!(m("iotflow_sink_items_rejected_total", &[es_sink]), refused);
    assert!(m("iotflow_sink_items_retried_total", &[es_sink]) >= 500);
    assert!(
        m(
            "iotflow_sink_errors_total",
            &[es_sink, "kind=\"transient\""]
        ) >= 3,
        "the 503s count as transient errors"
    );
    assert_eq!(
        m("iotflow_sink_errors_total", &[es_sink, "kind=\"definite\""]),
        0
    );
    assert_eq!(m("iotflow_dlq_records_total", &[]), malformed + refused);
    assert_eq!(
        m(
            "iotflow_dlq_records_total",
            &["operator=\"elasticsearch-sink\""]
        ),
        refused
    );
    assert!(!text.contains("sink=\"mysql\""), "MySQL was off");

    // Stopped by the test, not by an idle exit: the retries' backoff can outlast any idle
    // timeout, and the job must still be running when the final metrics are read.
    sigterm(&child);
    let (ok, stderr) = finish(child, Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (got, _) = stand_in_per_device(&es, "iot-data");
    let norm = |m: &BTreeMap<String, (u64, Decimal, Decimal, Decimal)>| -> BTreeMap<_, _> {
        m.iter()
            .map(|(k, (n, a, b, c))| (k.clone(), (*n, a.normalize(), b.normalize(), c.normalize())))
            .collect()
    };
    assert_eq!(norm(&got), norm(&want), "stored documents per device");

    let letters = f.dead_letters((malformed + refused) as usize);
    let from_es: Vec<_> = letters
        .iter()
        .filter(|l| l.2["iotflow.reason_code"] == "elasticsearch_rejected")
        .collect();
    assert_eq!(
        from_es.len() as u64,
        refused,
        "one dead letter per refused document"
    );
    for (key, payload, headers) in from_es {
        assert!(key.starts_with(&f.topic), "{key}");
        let reason = &headers["iotflow.reason"];
        assert!(
            reason.contains("mapper_parsing_exception") && reason.contains("iot-data-2025.04."),
            "{reason}"
        );
        let doc: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(doc["pboxid"], refused_device.as_str());
        assert_eq!(
            key,
            &format!("{}/{}/{}", f.topic, doc["src_partition"], doc["src_offset"])
        );
        Decimal::from_str(json_number(std::str::from_utf8(payload).unwrap(), "metric")).unwrap();
    }
}
