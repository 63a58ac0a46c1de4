//! A **stand-in** for Elasticsearch, not Elasticsearch: a small HTTP/1.1 server (hyper, iotflow's
//! one server stack) for tests and benchmarks of iotflow's Elasticsearch sink.
//!
//! No Elasticsearch-compatible server can be installed on the machine iotflow is developed and
//! tested on, so the sink is exercised against this server instead. It implements the three
//! endpoints the sink uses, after the documented request and response formats:
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
//! answering, a 400 `mapper_parsing_exception` for chosen documents, index-level item errors
//! for chosen indices (cluster blocks, missing privileges, no auto-create, closed index, shard
//! limit: [`IndexFault`]) and a cluster-wide read-only block. Passing against it
//! shows a client follows the documented protocol; it does not prove a real cluster agrees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::NaiveDateTime;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

/// What the stand-in stores and the faults it is told to inject.
#[derive(Default)]
pub struct State {
    /// `(_index, _id)` → (source line as sent, parsed).
    pub docs: BTreeMap<(String, String), (String, Value)>,
    /// Installed index templates by name.
    pub templates: HashMap<String, Value>,
    /// Method, path, `Authorization` header, number of bulk actions.
    pub requests: Vec<(String, String, Option<String>, usize)>,
    /// The exact `Authorization` value required, if any.
    pub required_auth: Option<String>,
    /// Answer 429 to this many next bulk items.
    pub items_429: usize,
    /// Answer 503 to this many next bulk requests.
    pub requests_503: usize,
    /// Wait this long before answering the next request.
    pub delay_next: Option<Duration>,
    /// Refuse documents with these `_id`s with `400 mapper_parsing_exception`, as a cluster
    /// does when a field's value conflicts with an existing mapping.
    pub reject_ids: HashSet<String>,
    /// Likewise for documents whose `pboxid` is one of these (a whole device's documents).
    pub reject_pboxids: HashSet<String>,
    /// Refuse every document of matching indices with an item error about the cluster or the
    /// index ([`IndexFault`]), for as long as the entry stays. Keys are index names, or
    /// prefixes ending in `*` (`iot-data-*`).
    pub index_faults: BTreeMap<String, IndexFault>,
    /// Refuse whole bulk requests with `403 cluster_block_exception`, as a cluster does while
    /// `cluster.blocks.read_only` is set.
    pub cluster_read_only: bool,
}

/// An index-level refusal, answered per item in the shape a cluster uses (status, `type`,
/// `reason`, and `index_uuid`/`index` where Elasticsearch adds them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexFault {
    /// `429 cluster_block_exception`: the flood-stage disk watermark put a
    /// read-only-allow-delete block on the index (Elasticsearch 7.4+ answers 429, older 403).
    FloodStage,
    /// `403 cluster_block_exception`: `index.blocks.write` is set.
    WriteBlock,
    /// `403 security_exception`: the user has no write privilege on the index.
    Unauthorized,
    /// `404 index_not_found_exception`: the index does not exist and
    /// `action.auto_create_index` does not allow creating it.
    NoAutoCreate,
    /// `400 index_closed_exception`: the index is closed.
    Closed,
    /// `400 validation_exception`: creating the index would exceed the cluster's shard limit.
    ShardLimit,
}

impl IndexFault {
    /// The item's status and `error` object for a document of `index`.
    pub fn item_error(self, index: &str) -> (u16, Value) {
        match self {
            IndexFault::FloodStage => (
                429,
                json!({"type": "cluster_block_exception", "reason": format!("index [{index}] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];")}),
            ),
            IndexFault::WriteBlock => (
                403,
                json!({"type": "cluster_block_exception", "reason": format!("index [{index}] blocked by: [FORBIDDEN/8/index write (api)];")}),
            ),
            IndexFault::Unauthorized => (
                403,
                json!({"type": "security_exception", "reason": format!("action [indices:data/write/bulk[s]] is unauthorized for user [iotflow] with effective roles [iot_reader] on indices [{index}], this action is granted by the index privileges [create_doc,create,index,write,all]")}),
            ),
            IndexFault::NoAutoCreate => (
                404,
                json!({"type": "index_not_found_exception", "reason": format!("no such index [{index}] and [action.auto_create_index] ([.monitoring*,.watches,logs-*]) doesn't match"), "index_uuid": "_na_", "index": index}),
            ),
            IndexFault::Closed => (
                400,
                json!({"type": "index_closed_exception", "reason": "closed", "index_uuid": "kQyD8mFzQb2xJ0e1VbCm4w", "index": index}),
            ),
            IndexFault::ShardLimit => (
                400,
                json!({"type": "validation_exception", "reason": "Validation Failed: 1: this action would add [2] shards, but this cluster currently has [1000]/[1000] maximum normal shards open;"}),
            ),
        }
    }
}

/// A running stand-in server.
pub struct StandIn {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    /// Shared state (documents, templates, requests, faults).
    pub state: Arc<Mutex<State>>,
}

impl StandIn {
    /// Starts serving on a free loopback port, on the current tokio runtime.
    pub async fn start() -> StandIn {
        let listener = iotflow_metrics::http::bind("127.0.0.1:0").expect("bind a loopback port");
        let listener = TcpListener::from_std(listener).expect("tokio listener");
        let (stand_in, shared) = StandIn::new(&listener);
        tokio::spawn(accept(listener, shared));
        stand_in
    }

    /// Starts serving on a free loopback port on a runtime of its own, in a background thread
    /// named `es-stand-in`, for callers without a tokio runtime (integration tests,
    /// benchmarks). Serves until the process exits.
    pub fn spawn() -> StandIn {
        let (runtime, listener) =
            iotflow_metrics::http::listen("127.0.0.1:0").expect("bind a loopback port");
        let (stand_in, shared) = StandIn::new(&listener);
        std::thread::Builder::new()
            .name("es-stand-in".into())
            .spawn(move || runtime.block_on(accept(listener, shared)))
            .expect("stand-in thread");
        stand_in
    }

    fn new(listener: &TcpListener) -> (StandIn, Arc<Mutex<State>>) {
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let state = Arc::new(Mutex::new(State::default()));
        (
            StandIn {
                url,
                state: state.clone(),
            },
            state,
        )
    }

    /// Documents stored, over all indices.
    pub fn doc_count(&self) -> usize {
        self.state().docs.len()
    }

    /// Locks the state.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

async fn accept(listener: TcpListener, state: Arc<Mutex<State>>) {
    while let Ok((socket, _)) = listener.accept().await {
        tokio::spawn(connection(socket, state.clone()));
    }
}

/// Serves HTTP/1.1 requests (keep-alive) on one connection, with hyper.
async fn connection(socket: TcpStream, state: Arc<Mutex<State>>) {
    let service = service_fn(move |request: Request<Incoming>| {
        let state = state.clone();
        async move {
            let method = request.method().as_str().to_string();
            let path = request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().path().to_string(), |p| p.to_string());
            let headers: HashMap<String, String> = request
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).trim().to_string(),
                    )
                })
                .collect();
            let body = request.into_body().collect().await?.to_bytes();
            let (status, response, delay) = handle(&state, &method, &path, &headers, &body);
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let mut response = Response::new(Full::new(Bytes::from(response.to_string())));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            Ok::<_, hyper::Error>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(socket), service)
        .await;
}

fn error(status: u16, kind: &str, reason: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason}, "status": status}),
    )
}

/// Answers one request (exposed so tests can check the stand-in's own behaviour).
pub fn handle(
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
            } else if s.cluster_read_only {
                error(
                    403,
                    "cluster_block_exception",
                    "blocked by: [FORBIDDEN/6/cluster read-only (api)];",
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
        let pboxid = serde_json::from_str::<Value>(source)
            .ok()
            .and_then(|d| d["pboxid"].as_str().map(str::to_string));
        let injected =
            s.reject_ids.contains(&id) || pboxid.is_some_and(|p| s.reject_pboxids.contains(&p));
        let fault = s
            .index_faults
            .iter()
            .find(|(pattern, _)| {
                pattern
                    .strip_suffix('*')
                    .map_or(**pattern == index, |prefix| index.starts_with(prefix))
            })
            .map(|(_, fault)| *fault);
        let item = if let Some(fault) = fault {
            // The index is refused before the document is looked at, as in a cluster.
            errors = true;
            let (status, e) = fault.item_error(&index);
            json!({"_index": index, "_id": id, "status": status, "error": e})
        } else if injected {
            errors = true;
            json!({"_index": index, "_id": id, "status": 400, "error": {
                "type": "mapper_parsing_exception",
                "reason": format!("failed to parse field [metric] of type [scaled_float] in document with id '{id}'"),
                "caused_by": {"type": "illegal_argument_exception", "reason": "mapping conflict (injected)"}}})
        } else if s.items_429 > 0 {
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
