//! The writer against a **stand-in** Elasticsearch, not a real one.
//!
//! No Elasticsearch can be installed on the machine this crate was written on, so these tests
//! start a small hand-written HTTP/1.1 server inside the test process. It implements the three
//! endpoints the sink uses after the documented request and response formats:
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
//! answering. Passing here shows the client follows the documented protocol; it does not
//! prove a real cluster agrees.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotflow_model::{Decimal, NaiveDateTime};
use iotflow_sink::{BatchWriter, RetryPolicy, SinkError};
use iotflow_sink_elasticsearch::{
    prepare, Auth, Connection, ElasticsearchWriter, Rejected, Row, IOT_DATA_TEMPLATE,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// The stand-in server.

#[derive(Default)]
struct State {
    /// `(_index, _id)` → (source line as sent, parsed).
    docs: BTreeMap<(String, String), (String, Value)>,
    templates: HashMap<String, Value>,
    /// Method, path, `Authorization` header, number of bulk actions.
    requests: Vec<(String, String, Option<String>, usize)>,
    /// The exact `Authorization` value required, if any.
    required_auth: Option<String>,
    /// Answer 429 to this many next bulk items.
    items_429: usize,
    /// Answer 503 to this many next bulk requests.
    requests_503: usize,
    /// Wait this long before answering the next request.
    delay_next: Option<Duration>,
}

struct StandIn {
    url: String,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(connection(socket, shared.clone()));
            }
        });
        StandIn { url, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serves HTTP/1.1 requests (keep-alive) on one connection.
async fn connection(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let head_end = loop {
            if let Some(p) = find(&buf, b"\r\n\r\n") {
                break p;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let path = request_line.next().unwrap_or("").to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + 4 + length {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end + 4..head_end + 4 + length].to_vec();
        buf.drain(..head_end + 4 + length);

        let (status, response, delay) = handle(&state, &method, &path, &headers, &body);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            406 => "Not Acceptable",
            503 => "Service Unavailable",
            _ => "Other",
        };
        let response = response.to_string();
        let message = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{response}",
            response.len()
        );
        if socket.write_all(message.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status}),
    )
}

fn handle(
    state: &Mutex<State>,
    method: &str,
    path: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
) -> (u16, Value, Option<Duration>) {
    let mut s = state.lock().unwrap();
    let delay = s.delay_next.take();
    let authorization = headers.get("authorization").cloned();
    let actions = if path == "/_bulk" {
        body.iter().filter(|b| **b == b'\n').count() / 2
    } else {
        0
    };
    s.requests
        .push((method.into(), path.into(), authorization.clone(), actions));
    if let Some(required) = &s.required_auth {
        if authorization.as_ref() != Some(required) {
            let (status, body) = error(
                401,
                "security_exception",
                "unable to authenticate user [elastic] for REST request [/_bulk]",
            );
            return (status, body, delay);
        }
    }
    let (status, body) = match (method, path) {
        ("GET", "/") => (
            200,
            json!({"name": "stand-in", "cluster_name": "iotflow-test",
                   "version": {"number": "8.15.0", "build_flavor": "default"},
                   "tagline": "You Know, for Search"}),
        ),
        ("PUT", p) if p.starts_with("/_index_template/") => {
            let name = &p["/_index_template/".len()..];
            match serde_json::from_slice::<Value>(body) {
                Ok(t) if t["index_patterns"].is_array() && t["template"].is_object() => {
                    s.templates.insert(name.to_string(), t);
                    (200, json!({"acknowledged": true}))
                }
                _ => error(
                    400,
                    "x_content_parse_exception",
                    "[index_template] failed to parse",
                ),
            }
        }
        ("POST", "/_bulk") => {
            if headers.get("content-type").map(String::as_str) != Some("application/x-ndjson") {
                error(
                    406,
                    "media_type_header_exception",
                    "Content-Type header is not supported",
                )
            } else if !body.ends_with(b"\n") {
                error(
                    400,
                    "illegal_argument_exception",
                    "The bulk request must be terminated by a newline [\\n]",
                )
            } else if s.requests_503 > 0 {
                s.requests_503 -= 1;
                error(
                    503,
                    "cluster_block_exception",
                    "blocked by: [SERVICE_UNAVAILABLE/1/state not recovered / initialized];",
                )
            } else {
                bulk(&mut s, body)
            }
        }
        _ => error(404, "resource_not_found_exception", "no handler"),
    };
    (status, body, delay)
}

fn bulk(s: &mut State, body: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(body).to_string();
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let [action, source] = pair else {
            return error(400, "illegal_argument_exception", "action without source");
        };
        let action: Value = match serde_json::from_str(action) {
            Ok(a) => a,
            Err(_) => return error(400, "x_content_parse_exception", "malformed action"),
        };
        let meta = &action["index"];
        let index = meta["_index"].as_str().unwrap_or_default().to_string();
        let id = meta["_id"].as_str().unwrap_or_default().to_string();
        let item = if s.items_429 > 0 {
            s.items_429 -= 1;
            errors = true;
            json!({"_index": index, "_id": id, "status": 429, "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation"}})
        } else {
            let parsed = serde_json::from_str::<Value>(source)
                .map_err(|e| {
                    (
                        "mapper_parsing_exception".to_string(),
                        format!("failed to parse: {e}"),
                        None,
                    )
                })
                .and_then(|doc| validate(s, &index, &id, &doc).map(|()| doc));
            match parsed {
                Ok(doc) => {
                    let old = s
                        .docs
                        .insert((index.clone(), id.clone()), (source.to_string(), doc));
                    let (status, result) = if old.is_some() {
                        (200, "updated")
                    } else {
                        (201, "created")
                    };
                    json!({"_index": index, "_id": id, "_version": 1, "result": result, "status": status})
                }
                Err((kind, reason, cause)) => {
                    errors = true;
                    let mut e = json!({"type": kind, "reason": reason});
                    if let Some((ck, cr)) = cause {
                        e["caused_by"] = json!({"type": ck, "reason": cr});
                    }
                    json!({"_index": index, "_id": id, "status": 400, "error": e})
                }
            }
        };
        items.push(json!({ "index": item }));
    }
    (200, json!({"took": 3, "errors": errors, "items": items}))
}

type Invalid = (String, String, Option<(String, String)>);

/// Checks a document against the mappings of the template whose pattern matches its index.
fn validate(s: &State, index: &str, id: &str, doc: &Value) -> Result<(), Invalid> {
    let Some(template) = s.templates.values().find(|t| {
        t["index_patterns"].as_array().unwrap().iter().any(|p| {
            let p = p.as_str().unwrap();
            p.strip_suffix('*')
                .map_or(p == index, |pre| index.starts_with(pre))
        })
    }) else {
        return Ok(()); // dynamic mapping: anything goes
    };
    let mappings = &template["template"]["mappings"];
    let properties = mappings["properties"].as_object().unwrap();
    let fields = doc.as_object().ok_or_else(|| {
        (
            "mapper_parsing_exception".to_string(),
            "not an object".to_string(),
            None,
        )
    })?;
    for (name, value) in fields {
        let Some(mapping) = properties.get(name) else {
            if mappings["dynamic"] == "strict" {
                return Err((
                    "strict_dynamic_mapping_exception".into(),
                    format!("[_doc] mapping set to strict, dynamic introduction of [{name}] within [_doc] is not allowed"),
                    None,
                ));
            }
            continue;
        };
        if value.is_null() {
            continue;
        }
        let kind = mapping["type"].as_str().unwrap();
        let fail = |cause: (&str, String)| {
            Err((
                "mapper_parsing_exception".to_string(),
                format!("failed to parse field [{name}] of type [{kind}] in document with id '{id}'. Preview of field's value: '{value}'"),
                Some((cause.0.to_string(), cause.1)),
            ))
        };
        let number = value
            .as_f64()
            .or_else(|| value.as_str().and_then(|t| t.parse().ok()));
        match kind {
            "keyword" if !(value.is_string() || value.is_number() || value.is_boolean()) => {
                return fail(("illegal_argument_exception", "not a keyword".into()));
            }
            "double" | "integer" | "long" if number.is_none() => {
                return fail((
                    "number_format_exception",
                    format!("For input string: {value}"),
                ));
            }
            "integer" | "long" if number.is_some_and(|n| n.fract() != 0.0) => {
                return fail((
                    "illegal_argument_exception",
                    format!("Value [{value}] has a decimal part"),
                ));
            }
            "date" => {
                let ok = match mapping["format"].as_str() {
                    Some("epoch_millis") => number.is_some(),
                    Some("yyyy-MM-dd HH:mm:ss.SSS") => value.as_str().is_some_and(|t| {
                        t.len() == 23
                            && NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.3f").is_ok()
                    }),
                    _ => true,
                };
                if !ok {
                    return fail((
                        "illegal_argument_exception",
                        format!("failed to parse date field [{value}]"),
                    ));
                }
            }
            "geo_point" => {
                let (lat, lon) = (value["lat"].as_f64(), value["lon"].as_f64());
                match (lat, lon) {
                    (Some(lat), _) if !(-90.0..=90.0).contains(&lat) => {
                        return fail((
                            "illegal_argument_exception",
                            format!("illegal latitude value [{lat:?}] for {name}"),
                        ));
                    }
                    (_, Some(lon)) if !(-180.0..=180.0).contains(&lon) => {
                        return fail((
                            "illegal_argument_exception",
                            format!("illegal longitude value [{lon:?}] for {name}"),
                        ));
                    }
                    (Some(_), Some(_)) => {}
                    _ => return fail(("illegal_argument_exception", "field [lat] missing".into())),
                }
            }
            _ => {}
        }
    }
    Ok(())
}

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

async fn connect(server: &StandIn, auth: Auth, timeout: Duration) -> Result<Connection, SinkError> {
    prepare(&server.url, auth, PREFIX, IOT_DATA_TEMPLATE, timeout).await
}

fn make_writer(connection: Connection) -> (ElasticsearchWriter, Collected) {
    let rejected: Collected = Arc::default();
    let sink = rejected.clone();
    let writer = ElasticsearchWriter::new(
        connection,
        PREFIX,
        Box::new(move |r| sink.lock().unwrap().push(r)),
    )
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
        let (text, doc) = &s.docs[&(row.index_name(PREFIX), row.doc_id())];
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
    let e = prepare(
        &url,
        Auth::None,
        PREFIX,
        IOT_DATA_TEMPLATE,
        Duration::from_secs(2),
    )
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
