//! The writer against a **stand-in** Elasticsearch (crate `iotflow-es-stand-in`), not a real
//! one: no Elasticsearch can be installed on the machine this crate was written on. The
//! stand-in implements the three endpoints the sink uses after the documented formats:
//!
//! * `GET /` — the cluster banner with `version.number`;
//! * `PUT /_index_template/<name>` — stores the template; its `index_patterns` and
//!   `mappings.properties` decide how documents of matching indices are validated;
//! * `POST /_bulk` — NDJSON (`Content-Type: application/x-ndjson`, final newline required),
//!   documents stored by `(_index, _id)` so a re-sent document overwrites itself, per-item
//!   results (`201 created` / `200 updated`, `400 mapper_parsing_exception` for a value that
//!   does not fit its mapped type, `strict_dynamic_mapping_exception` for unknown fields).
//!
//! It checks an `Authorization` header when told to (401 `security_exception` otherwise) and
//! injects faults: 429 for the next N items, 503 for the next M bulk requests, a delay before
//! answering, index-level item errors (cluster blocks, missing privileges, no auto-create,
//! closed index, shard limit) and a cluster-wide read-only block. Passing here shows the client follows the documented protocol; it does not
//! prove a real cluster agrees.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotflow_es_stand_in::{handle, IndexFault, StandIn};
use iotflow_model::{Decimal, NaiveDateTime};
use iotflow_sink::{BatchWriter, RejectRecorder, Rejected, Rejects, RetryPolicy, SinkError};
use iotflow_sink_elasticsearch::{
    doc_id, index_name, prepare, Auth, Connection, ElasticsearchConfig, ElasticsearchWriter, Row,
};
use serde_json::json;
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------------------------
// Helpers.

const PREFIX: &str = "iot-data";

/// `n` rows, five minutes apart from 2025-04-10 22:00 (so they span four daily indices),
/// spread over three partitions.
fn rows(n: usize) -> Vec<Row> {
    let start =
        NaiveDateTime::parse_from_str("2025-04-10 22:00:00.125", "%Y-%m-%d %H:%M:%S%.f").unwrap();
    (0..n)
        .map(|i| Row {
            event_time: start + minutes(5 * i as i64),
            pboxid: format!("box-{}", i % 17),
            metric: Decimal::from_str(&format!("{i}.123456789")).unwrap(),
            latitude: Decimal::from_str("31.23041600").unwrap(),
            longitude: Decimal::from_str("121.47370001").unwrap(),
            company: Some("ACME \"East\"".into()),
            site: Some("S1".into()),
            line: None,
            device_name: Some("press ✓".into()),
            model: Some("M-7".into()),
            device_status: Some("running".into()),
            work_threshold: Some(Decimal::from(50)),
            src_partition: (i % 3) as i32,
            src_offset: (i / 3) as i64,
            kafka_ts_ms: Some(1_744_322_400_000 + i as i64),
        })
        .collect()
}

fn minutes(m: i64) -> std::time::Duration {
    Duration::from_secs(60 * m as u64)
}

type Collected = Arc<Mutex<Vec<Rejected>>>;

/// The sink's section of the config for a cluster at `url`, with `auth` and `timeout`.
fn config(url: &str, auth: Auth, timeout: Duration) -> ElasticsearchConfig {
    let mut c = ElasticsearchConfig {
        url: url.into(),
        index_prefix: PREFIX.into(),
        install_template: true,
        request_timeout_ms: timeout.as_millis() as u64,
        ..ElasticsearchConfig::default()
    };
    match auth {
        Auth::None => {}
        Auth::Basic { user, password } => (c.user, c.password) = (user, password),
        Auth::ApiKey(key) => c.api_key = key,
    }
    c
}

async fn connect(server: &StandIn, auth: Auth, timeout: Duration) -> Result<Connection, SinkError> {
    prepare(&config(&server.url, auth, timeout), 1)
        .await
        .map(|c| c.connection().clone())
}

/// A recorder handing refused documents to `rejects`.
fn recorder(rejects: Rejects) -> RejectRecorder {
    RejectRecorder::none("elasticsearch").to(rejects)
}

fn make_writer(connection: Connection) -> (ElasticsearchWriter, Collected) {
    let rejected: Collected = Arc::default();
    let sink = rejected.clone();
    let writer = ElasticsearchWriter::new(connection, PREFIX)
        .with_rejects(recorder(Arc::new(move |r| {
            sink.lock().unwrap().push(r);
            Box::pin(async { Ok(()) })
        })))
        .with_item_retry(
            4,
            RetryPolicy {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
            },
        );
    (writer, rejected)
}

async fn ready(server: &StandIn) -> (ElasticsearchWriter, Collected) {
    make_writer(
        connect(server, Auth::None, Duration::from_secs(5))
            .await
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn prepare_checks_the_cluster_and_installs_the_template() {
    let server = StandIn::start().await;
    let connection = connect(&server, Auth::None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(connection.version(), "8.15.0");
    assert_eq!(connection.url(), server.url);
    let s = server.state();
    let template = &s.templates[PREFIX];
    assert_eq!(template["index_patterns"], json!(["iot-data-*"]));
    assert_eq!(
        template["template"]["mappings"]["properties"]["location"]["type"],
        "geo_point"
    );
    let paths: Vec<_> = s
        .requests
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str()))
        .collect();
    assert_eq!(paths, [("GET", "/"), ("PUT", "/_index_template/iot-data")]);
}

#[tokio::test]
async fn thousand_rows_land_in_daily_indices_and_rewrites_overwrite() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let rows = rows(1000);
    writer.write(&rows).await.unwrap();
    writer.write(&rows).await.unwrap();
    assert!(rejected.lock().unwrap().is_empty());

    let s = server.state();
    assert_eq!(s.docs.len(), 1000, "re-written rows overwrite themselves");
    let mut per_index: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, _) in s.docs.keys() {
        *per_index.entry(index.as_str()).or_default() += 1;
    }
    // 22:00 on the 10th + 5 min × 999 = 13:15 on the 14th.
    assert_eq!(
        per_index.keys().copied().collect::<Vec<_>>(),
        [
            "iot-data-2025.04.10",
            "iot-data-2025.04.11",
            "iot-data-2025.04.12",
            "iot-data-2025.04.13",
            "iot-data-2025.04.14"
        ]
    );
    assert_eq!(per_index["iot-data-2025.04.10"], 24, "22:00..23:55");
    for row in &rows {
        let (text, doc) = &s.docs[&(index_name(row, PREFIX), doc_id(row))];
        assert_eq!(doc["pboxid"], row.pboxid.as_str());
        assert_eq!(doc["src_offset"], row.src_offset);
        assert!(
            text.contains(&format!("\"metric\":{},", row.metric)),
            "{text}"
        );
    }
    let first = &s.docs[&(
        "iot-data-2025.04.10".to_string(),
        "0-0-1744322400125".to_string(),
    )]
        .0;
    assert!(first.starts_with(r#"{"event_time":"2025-04-10 22:00:00.125","pboxid":"box-0","metric":0.123456789,"location":{"lat":31.23041600,"lon":121.47370001},"company":"ACME \"East\"""#), "{first}");
    assert_eq!(s.requests.iter().filter(|r| r.1 == "/_bulk").count(), 2);
}

#[tokio::test]
async fn items_refused_with_429_are_retried_alone_until_stored() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    server.state().items_429 = 150;
    writer.write(&rows(1000)).await.unwrap();
    let s = server.state();
    assert_eq!(s.docs.len(), 1000);
    assert!(rejected.lock().unwrap().is_empty());
    let bulk_sizes: Vec<usize> = s
        .requests
        .iter()
        .filter(|r| r.1 == "/_bulk")
        .map(|r| r.3)
        .collect();
    assert_eq!(
        bulk_sizes,
        [1000, 150],
        "only the refused items are sent again"
    );
}

#[tokio::test]
async fn items_refused_past_the_attempts_make_the_write_transient_then_it_succeeds() {
    let server = StandIn::start().await;
    let (mut writer, _) = ready(&server).await;
    let rows = rows(100);
    server.state().items_429 = 10_000;
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("es_rejected_execution_exception"),
        "{e}"
    );
    assert_eq!(
        server
            .state()
            .requests
            .iter()
            .filter(|r| r.1 == "/_bulk")
            .count(),
        4
    );
    server.state().items_429 = 0;
    writer.write(&rows).await.unwrap();
    assert_eq!(server.state().docs.len(), 100);
}

#[tokio::test]
async fn a_retried_batch_records_its_rejections_once() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let rows = rows(20);
    {
        let mut s = server.state();
        s.reject_ids.insert(doc_id(&rows[2]));
        s.reject_ids.insert(doc_id(&rows[9]));
        // The first pass rejects two documents and throttles the rest past the attempts.
        s.items_429 = 10_000;
    }
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(rejected.lock().unwrap().len(), 2);
    server.state().items_429 = 0;
    writer.write(&rows).await.unwrap();
    assert_eq!(server.doc_count(), 18);
    let got: Vec<i64> = rejected
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.src_offset)
        .collect();
    assert_eq!(got.len(), 2, "recorded once each: {got:?}");
    // A new batch with the same rows (as after a restart) records them again.
    writer.write(&rows).await.unwrap();
    assert_eq!(rejected.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn whole_request_503_is_transient_and_the_next_write_succeeds() {
    let server = StandIn::start().await;
    let (mut writer, _) = ready(&server).await;
    let rows = rows(200);
    server.state().requests_503 = 1;
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    assert!(server.state().docs.is_empty());
    writer.write(&rows).await.unwrap();
    assert_eq!(server.state().docs.len(), 200);
}

#[tokio::test]
async fn a_definitely_bad_document_goes_to_rejects_and_the_others_are_stored() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let mut rows = rows(50);
    rows[7].latitude = Decimal::from_str("95.5").unwrap();
    writer.write(&rows).await.unwrap();
    assert_eq!(server.state().docs.len(), 49);
    let rejected = rejected.lock().unwrap();
    assert_eq!(rejected.len(), 1);
    let r = &rejected[0];
    assert_eq!(
        (r.src_partition, r.src_offset),
        (rows[7].src_partition, rows[7].src_offset)
    );
    assert!(r.reason.starts_with("status 400: mapper_parsing_exception: failed to parse field [location] of type [geo_point]"), "{}", r.reason);
    assert!(
        r.reason.contains("illegal latitude value [95.5]"),
        "{}",
        r.reason
    );
    assert_eq!(r.target, "iot-data-2025.04.10");
    assert_eq!(r.kafka_ts_ms, rows[7].kafka_ts_ms);
    let doc: serde_json::Value = serde_json::from_str(&r.document).unwrap();
    assert_eq!(doc["location"]["lat"], json!(95.5));
    assert_eq!(doc["src_offset"], json!(rows[7].src_offset));
}

#[tokio::test]
async fn a_rejection_that_cannot_be_recorded_makes_the_write_transient() {
    let server = StandIn::start().await;
    let connection = connect(&server, Auth::None, Duration::from_secs(5))
        .await
        .unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let recorded: Collected = Arc::default();
    let (f, sink) = (fail.clone(), recorded.clone());
    let rejects: Rejects = Arc::new(move |r| {
        let failing = f.load(std::sync::atomic::Ordering::SeqCst);
        if !failing {
            sink.lock().unwrap().push(r);
        }
        Box::pin(async move {
            if failing {
                Err("dead-letter topic unreachable".to_string())
            } else {
                Ok(())
            }
        })
    });
    let mut writer = ElasticsearchWriter::new(connection, PREFIX).with_rejects(recorder(rejects));
    let mut rows = rows(10);
    rows[3].longitude = Decimal::from_str("-190").unwrap();
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("dead-letter topic unreachable"),
        "{e}"
    );
    assert!(recorded.lock().unwrap().is_empty());
    // Once the dead letters work again, the retried batch completes: the good documents
    // overwrite themselves, the bad one is recorded.
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    writer.write(&rows).await.unwrap();
    assert_eq!(server.doc_count(), 9);
    assert_eq!(recorded.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_answer_is_a_transient_timeout() {
    let server = StandIn::start().await;
    let (mut writer, _) = make_writer(
        connect(&server, Auth::None, Duration::from_millis(300))
            .await
            .unwrap(),
    );
    server.state().delay_next = Some(Duration::from_secs(2));
    let e = writer.write(&rows(10)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    writer.write(&rows(10)).await.unwrap();
    assert_eq!(server.state().docs.len(), 10);
}

#[tokio::test]
async fn unreachable_cluster_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = prepare(&config(&url, Auth::None, Duration::from_secs(2)), 1)
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[tokio::test]
async fn wrong_credentials_are_definite() {
    let server = StandIn::start().await;
    server.state().required_auth = Some("Basic ZWxhc3RpYzpodW50ZXIy".into());
    let wrong = Auth::Basic {
        user: "elastic".into(),
        password: "wrong".into(),
    };
    let e = connect(&server, wrong, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("check credentials"), "{e}");

    // Credentials that stop working after start-up (password rotated) fail the write.
    let right = Auth::Basic {
        user: "elastic".into(),
        password: "hunter2".into(),
    };
    let (mut writer, _) = make_writer(
        connect(&server, right, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    server.state().required_auth = Some("Basic ZWxhc3RpYzpjaGFuZ2Vk".into());
    let e = writer.write(&rows(5)).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(e.to_string().contains("security_exception"), "{e}");
}

#[tokio::test]
async fn auth_headers_are_sent_and_never_in_debug_output() {
    let server = StandIn::start().await;
    server.state().required_auth = Some("Basic ZWxhc3RpYzpodW50ZXIy".into());
    let basic = Auth::Basic {
        user: "elastic".into(),
        password: "hunter2".into(),
    };
    let (mut writer, _) = make_writer(
        connect(&server, basic, Duration::from_secs(5))
            .await
            .unwrap(),
    );
    writer.write(&rows(3)).await.unwrap();
    let debug = format!("{writer:?}");
    assert!(
        !debug.contains("hunter2") && !debug.contains("ZWxhc3Rp"),
        "{debug}"
    );
    assert!(debug.contains("<redacted>"), "{debug}");

    server.state().required_auth = Some("ApiKey c2VjcmV0LWlkOnNlY3JldC1rZXk=".into());
    let key = Auth::ApiKey("c2VjcmV0LWlkOnNlY3JldC1rZXk=".into());
    let connection = connect(&server, key, Duration::from_secs(5)).await.unwrap();
    let debug = format!("{connection:?}");
    assert!(!debug.contains("c2VjcmV0"), "{debug}");
    let (mut writer, _) = make_writer(connection);
    writer.write(&rows(3)).await.unwrap();
    let debug = format!("{writer:?}");
    assert!(!debug.contains("c2VjcmV0"), "{debug}");

    let s = server.state();
    assert!(
        s.requests.iter().all(|r| r.2.is_some()),
        "every request authenticated"
    );
    assert_eq!(
        s.requests.last().unwrap().2.as_deref(),
        Some("ApiKey c2VjcmV0LWlkOnNlY3JldC1rZXk=")
    );
}

#[tokio::test]
async fn the_stand_in_rejects_what_the_mappings_forbid() {
    // Keeps the stand-in honest: documents the writer cannot produce still get the documented
    // per-item errors.
    let server = StandIn::start().await;
    let _ = ready(&server).await;
    let body = concat!(
        r#"{"index":{"_index":"iot-data-2025.04.10","_id":"a"}}"#,
        "\n",
        r#"{"event_time":"2025-04-10 08:00:00.000","pboxid":"p","metric":"abc","location":{"lat":1,"lon":2},"src_partition":0,"src_offset":1}"#,
        "\n",
        r#"{"index":{"_index":"iot-data-2025.04.10","_id":"b"}}"#,
        "\n",
        r#"{"event_time":"2025-04-10 08:00:00.000","pboxid":"p","metric":1,"location":{"lat":1,"lon":2},"surprise":1,"src_partition":0,"src_offset":2}"#,
        "\n",
        r#"{"index":{"_index":"iot-data-2025.04.10","_id":"c"}}"#,
        "\n",
        r#"{"event_time":"2025-04-10T08:00:00Z","pboxid":"p","metric":1,"location":{"lat":1,"lon":2},"src_partition":0,"src_offset":3}"#,
        "\n",
    );
    let headers = HashMap::from([(
        "content-type".to_string(),
        "application/x-ndjson".to_string(),
    )]);
    let (status, response, _) = handle(&server.state, "POST", "/_bulk", &headers, body.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(response["errors"], true);
    let outcomes = iotflow_sink_elasticsearch::response::parse_bulk_response(
        response.to_string().as_bytes(),
        3,
    )
    .unwrap();
    use iotflow_sink_elasticsearch::response::ItemOutcome::Rejected as R;
    assert!(
        matches!(&outcomes[0], R(r) if r.contains("mapper_parsing_exception") && r.contains("[metric] of type [double]"))
    );
    assert!(matches!(&outcomes[1], R(r) if r.contains("strict_dynamic_mapping_exception")));
    assert!(matches!(&outcomes[2], R(r) if r.contains("[event_time] of type [date]")));
    let (status, _, _) = handle(
        &server.state,
        "POST",
        "/_bulk",
        &HashMap::new(),
        body.as_bytes(),
    );
    assert_eq!(status, 406, "bulk bodies must be declared as NDJSON");
}

fn bulk_requests(server: &StandIn) -> usize {
    server
        .state()
        .requests
        .iter()
        .filter(|r| r.1 == "/_bulk")
        .count()
}

#[tokio::test]
async fn a_flood_stage_block_stalls_the_write_without_dead_letters_until_it_is_lifted() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let rows = rows(50);
    server
        .state()
        .index_faults
        .insert("iot-data-*".into(), IndexFault::FloodStage);
    for _ in 0..2 {
        // Each attempt of the operator's retry loop fails the same way.
        let e = writer.write(&rows).await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        let text = e.to_string();
        assert!(text.contains("cluster_block_exception"), "{text}");
        assert!(text.contains("flood-stage watermark"), "{text}");
        assert!(text.contains("(and 49 more items like it)"), "{text}");
    }
    assert!(
        rejected.lock().unwrap().is_empty(),
        "nothing is dead-lettered for a blocked index"
    );
    assert_eq!(
        bulk_requests(&server),
        2,
        "the block fails the write at once, without item retries"
    );
    server.state().index_faults.clear();
    writer.write(&rows).await.unwrap();
    assert_eq!(server.doc_count(), 50);
    assert!(rejected.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_shard_limit_on_a_new_daily_index_is_transient() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let rows = rows(1000);
    server
        .state()
        .index_faults
        .insert("iot-data-2025.04.12".into(), IndexFault::ShardLimit);
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("maximum normal shards open"), "{e}");
    assert!(e.to_string().contains("iot-data-2025.04.12"), "{e}");
    assert!(rejected.lock().unwrap().is_empty());
    server.state().index_faults.clear();
    writer.write(&rows).await.unwrap();
    assert_eq!(server.doc_count(), 1000);
    assert!(rejected.lock().unwrap().is_empty());
}

#[tokio::test]
async fn missing_write_privileges_stop_the_job_instead_of_dead_lettering() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    server
        .state()
        .index_faults
        .insert("iot-data-*".into(), IndexFault::Unauthorized);
    let e = writer.write(&rows(30)).await.unwrap_err();
    assert!(!e.is_transient(), "{e}");
    let text = e.to_string();
    assert!(text.contains("security_exception"), "{text}");
    assert!(
        text.contains("is unauthorized for user [iotflow]"),
        "{text}"
    );
    assert!(text.contains("privilege"), "{text}");
    assert!(rejected.lock().unwrap().is_empty());
    assert_eq!(server.doc_count(), 0);
}

#[tokio::test]
async fn an_index_the_cluster_will_not_create_or_has_closed_is_definite() {
    for (fault, words) in [
        (IndexFault::NoAutoCreate, "index_not_found_exception"),
        (IndexFault::Closed, "index_closed_exception"),
    ] {
        let server = StandIn::start().await;
        let (mut writer, rejected) = ready(&server).await;
        // Only the second day is affected: the write fails all the same.
        server
            .state()
            .index_faults
            .insert("iot-data-2025.04.11".into(), fault);
        let e = writer.write(&rows(50)).await.unwrap_err();
        assert!(!e.is_transient(), "{fault:?}: {e}");
        assert!(e.to_string().contains(words), "{fault:?}: {e}");
        assert!(
            e.to_string().contains("index `iot-data-2025.04.11`"),
            "{fault:?}: {e}"
        );
        assert!(rejected.lock().unwrap().is_empty(), "{fault:?}");
    }
}

#[tokio::test]
async fn a_bad_document_beside_a_blocked_index_is_dead_lettered_once_the_block_is_lifted() {
    let server = StandIn::start().await;
    let (mut writer, rejected) = ready(&server).await;
    let rows = rows(50);
    {
        let mut s = server.state();
        // rows[1] is on the 10th, rows[24..] on the 11th.
        s.reject_ids.insert(doc_id(&rows[1]));
        s.index_faults
            .insert("iot-data-2025.04.11".into(), IndexFault::WriteBlock);
    }
    let e = writer.write(&rows).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("FORBIDDEN/8/index write"), "{e}");
    assert!(
        rejected.lock().unwrap().is_empty(),
        "no item of a failed response is acted on"
    );
    server.state().index_faults.clear();
    writer.write(&rows).await.unwrap();
    assert_eq!(server.doc_count(), 49);
    let rejected = rejected.lock().unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].src_offset, rows[1].src_offset);
    assert!(
        rejected[0].reason.contains("mapper_parsing_exception"),
        "{}",
        rejected[0].reason
    );
}

#[tokio::test]
async fn a_cluster_wide_read_only_block_is_transient() {
    let server = StandIn::start().await;
    let (mut writer, _) = ready(&server).await;
    server.state().cluster_read_only = true;
    let e = writer.write(&rows(10)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("HTTP 403"), "{e}");
    assert!(e.to_string().contains("cluster read-only"), "{e}");
    server.state().cluster_read_only = false;
    writer.write(&rows(10)).await.unwrap();
    assert_eq!(server.doc_count(), 10);
}
