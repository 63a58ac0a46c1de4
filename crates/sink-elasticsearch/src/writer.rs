//! The Elasticsearch [`BatchWriter`], authentication and the start-up check.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use iotflow_metrics::IntCounter;
use iotflow_sink::{backoff, BatchWriter, RetryPolicy, SinkError};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::Value;

use crate::encoder::{encode_bulk, encode_row};
use crate::response::{describe_error, parse_bulk_response, snippet, ItemOutcome};
use crate::Row;

/// The index template of the daily indices (`index_patterns` is replaced by [`prepare`] with
/// `{prefix}-*`).
pub const IOT_DATA_TEMPLATE: &str =
    include_str!("../../../schemas/elasticsearch/iot-data-template.json");

/// How the sink authenticates. `Debug` never shows a secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// No `Authorization` header (security disabled, or a proxy that adds it).
    #[default]
    None,
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// `Authorization: ApiKey <key>`, where `<key>` is the `encoded` value Elasticsearch
    /// returned when the key was created (base64 of `id:api_key`).
    ApiKey(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Auth::ApiKey(_) => f.debug_tuple("ApiKey").field(&"<redacted>").finish(),
        }
    }
}

impl Auth {
    fn apply(&self, request: RequestBuilder) -> Result<RequestBuilder, SinkError> {
        Ok(match self {
            Auth::None => request,
            // reqwest marks the basic-auth header sensitive itself.
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
            Auth::ApiKey(key) => {
                let mut value = HeaderValue::from_str(&format!("ApiKey {key}")).map_err(|_| {
                    SinkError::Definite(
                        "the Elasticsearch API key contains characters not allowed in a header"
                            .into(),
                    )
                })?;
                value.set_sensitive(true);
                request.header(AUTHORIZATION, value)
            }
        })
    }
}

/// A checked connection to an Elasticsearch cluster, as returned by [`prepare`].
#[derive(Clone)]
pub struct Connection {
    client: Client,
    url: String,
    auth: Auth,
    version: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("auth", &self.auth)
            .field("version", &self.version)
            .finish()
    }
}

impl Connection {
    /// The cluster's base URL (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server version `GET /` reported (`version.number`), or `"unknown"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    async fn send(
        &self,
        request: RequestBuilder,
        context: &(dyn Fn() -> String + Sync),
    ) -> Result<(StatusCode, Vec<u8>), SinkError> {
        let response = self
            .auth
            .apply(request)?
            .send()
            .await
            .map_err(|e| request_error(&context(), e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| request_error(&context(), e))?;
        Ok((status, body.to_vec()))
    }
}

// Refused documents are [`Rejected`] rows handed to [`Rejects`], the same for every sink.
pub use iotflow_sink::{RejectFuture, Rejected, Rejects};

/// Writes batches of [`Row`]s with the `_bulk` API into daily indices.
///
/// `write` returns `Ok` only once every row is stored (2xx) or durably handed to `rejects`
/// (its future resolved `Ok`). Items the
/// server refused with 429 or 5xx are sent again, alone, up to `item_attempts` times with
/// jittered backoff; after that `write` returns [`SinkError::Transient`] and the generic sink
/// operator retries the whole batch, which is harmless: ids are deterministic, so stored
/// documents overwrite themselves. A row rejected in a batch that is retried is rejected
/// again, but recorded once: the writer remembers what it recorded until the batch succeeds.
/// Only a crash records a rejection twice (the batch is re-read from Kafka), so the
/// dead-letter side must tolerate rare duplicates, keyed by `(src_partition, src_offset)`.
pub struct ElasticsearchWriter {
    connection: Connection,
    index_prefix: String,
    rejects: Rejects,
    item_attempts: u32,
    item_backoff: RetryPolicy,
    rejected: Option<IntCounter>,
    item_retries: Option<IntCounter>,
    /// Rows of the batch being written whose rejection is already recorded: the operator
    /// retries a failed write with the same rows, and a retry must not record them again.
    recorded: HashSet<(i32, i64)>,
    /// Rejections are logged at most once per 10 s (with the count left out).
    last_log: Option<Instant>,
    unlogged: u64,
}

impl fmt::Debug for ElasticsearchWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticsearchWriter")
            .field("connection", &self.connection)
            .field("index_prefix", &self.index_prefix)
            .field("item_attempts", &self.item_attempts)
            .field("item_backoff", &self.item_backoff)
            .finish_non_exhaustive()
    }
}

impl ElasticsearchWriter {
    /// A writer on `connection` (as returned by [`prepare`]) into `{index_prefix}-YYYY.MM.DD`,
    /// handing definitely refused documents to `rejects`. Retriable items get 5 attempts per
    /// `write`, with backoff from 100 ms up to 2 s.
    pub fn new(connection: Connection, index_prefix: &str, rejects: Rejects) -> Self {
        ElasticsearchWriter {
            connection,
            index_prefix: index_prefix.to_string(),
            rejects,
            item_attempts: 5,
            item_backoff: RetryPolicy {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
            rejected: None,
            item_retries: None,
            recorded: HashSet::new(),
            last_log: None,
            unlogged: 0,
        }
    }

    /// Counts documents rejected definitely into `rejected` and documents sent again after a
    /// retriable item status into `item_retries`.
    pub fn with_counters(mut self, rejected: IntCounter, item_retries: IntCounter) -> Self {
        self.rejected = Some(rejected);
        self.item_retries = Some(item_retries);
        self
    }

    /// Sets how often (at least once) and with what backoff retriable items are sent within
    /// one `write`.
    pub fn with_item_retry(mut self, attempts: u32, backoff: RetryPolicy) -> Self {
        self.item_attempts = attempts.max(1);
        self.item_backoff = backoff;
        self
    }

    /// One `_bulk` request for `rows`; the outcome of each, in order.
    async fn bulk(&self, rows: &[&Row]) -> Result<Vec<ItemOutcome>, SinkError> {
        let body = encode_bulk(rows.iter().copied(), &self.index_prefix);
        let context = || {
            format!(
                "bulk-indexing {} documents into Elasticsearch at {}",
                rows.len(),
                self.connection.url
            )
        };
        let request = self
            .connection
            .client
            .post(format!("{}/_bulk", self.connection.url))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let (status, body) = self.connection.send(request, &context).await?;
        if !status.is_success() {
            return Err(classify_status(&context(), status, &body));
        }
        // A 200 that is not a bulk response (a proxy's page, a truncated body): retry.
        let outcomes = parse_bulk_response(&body, rows.len())
            .map_err(|e| SinkError::Transient(format!("{}: {e}", context())))?;
        // An item refused for a reason about the cluster or its index fails the whole write
        // before any item of the response is acted on: a document refused for its own reason
        // in the same response is not dead-lettered while the batch is retried or the job
        // stops (the retry, or the restarted job, sees it again).
        let mut sink_wide = outcomes.iter().filter_map(|o| match o {
            ItemOutcome::Sink(e) => Some(e),
            _ => None,
        });
        if let Some(first) = sink_wide.next() {
            let more = match sink_wide.count() {
                0 => String::new(),
                n => format!(" (and {n} more items like it)"),
            };
            let with_context = |m: &str| format!("{}: {m}{more}", context());
            return Err(match first {
                SinkError::Transient(m) => SinkError::Transient(with_context(m)),
                SinkError::Definite(m) => SinkError::Definite(with_context(m)),
            });
        }
        Ok(outcomes)
    }
}

impl BatchWriter for ElasticsearchWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let mut pending: Vec<&Row> = rows.iter().collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let outcomes = self.bulk(&pending).await?;
            let mut retry = Vec::new();
            let mut last_reason = String::new();
            for (row, outcome) in pending.iter().zip(outcomes) {
                match outcome {
                    ItemOutcome::Stored => {}
                    ItemOutcome::Retry(reason) => {
                        retry.push(*row);
                        last_reason = reason;
                    }
                    // (`bulk` already returns these as the write's error.)
                    ItemOutcome::Sink(e) => return Err(e),
                    ItemOutcome::Rejected(reason) => {
                        if self.recorded.contains(&(row.src_partition, row.src_offset)) {
                            continue;
                        }
                        if self
                            .last_log
                            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
                        {
                            tracing::warn!(
                                partition = row.src_partition,
                                offset = row.src_offset,
                                %reason,
                                not_logged_before = self.unlogged,
                                "Elasticsearch rejected a document: sending it to the dead letters"
                            );
                            self.last_log = Some(Instant::now());
                            self.unlogged = 0;
                        } else {
                            self.unlogged += 1;
                        }
                        let mut lines = String::new();
                        encode_row(row, &self.index_prefix, &mut lines);
                        let document = lines
                            .split_once('\n')
                            .map_or("", |(_, source)| source.trim_end())
                            .to_string();
                        let rejected = Rejected {
                            src_partition: row.src_partition,
                            src_offset: row.src_offset,
                            kafka_ts_ms: row.kafka_ts_ms,
                            target: row.index_name(&self.index_prefix),
                            document,
                            reason,
                        };
                        (self.rejects)(rejected).await.map_err(|e| {
                            SinkError::Transient(format!(
                                "recording a document Elasticsearch rejected ({}/{}): {e}",
                                row.src_partition, row.src_offset
                            ))
                        })?;
                        self.recorded.insert((row.src_partition, row.src_offset));
                        if let Some(c) = &self.rejected {
                            c.inc();
                        }
                    }
                }
            }
            attempt += 1;
            if !retry.is_empty() {
                if attempt >= self.item_attempts {
                    return Err(SinkError::Transient(format!(
                        "Elasticsearch still refused {} of {} documents after {attempt} attempts; last: {last_reason}",
                        retry.len(),
                        rows.len()
                    )));
                }
                if let Some(c) = &self.item_retries {
                    c.inc_by(retry.len() as u64);
                }
                tracing::debug!(
                    documents = retry.len(),
                    attempt,
                    reason = %last_reason,
                    "retrying documents Elasticsearch refused for now"
                );
                tokio::time::sleep(backoff(&self.item_backoff, attempt - 1)).await;
            }
            pending = retry;
        }
        self.recorded.clear();
        Ok(())
    }

    fn row_size(row: &Row) -> usize {
        // Action line and fixed fields (~260 bytes) plus the variable strings with their keys.
        260 + row.pboxid.len()
            + [
                &row.company,
                &row.site,
                &row.line,
                &row.device_name,
                &row.model,
                &row.device_status,
            ]
            .iter()
            .map(|s| s.as_ref().map_or(0, |s| s.len() + 18))
            .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Row) -> Option<i64> {
        row.kafka_ts_ms
    }
}

/// A request that got no HTTP answer: connection refused or cut, timeout, TLS trouble. Only a
/// request that could not be built is definite. The URL is left out of reqwest's message (the
/// context names the cluster).
fn request_error(context: &str, e: reqwest::Error) -> SinkError {
    let definite = e.is_builder();
    let e = e.without_url();
    let mut message = format!("{context}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    if definite {
        SinkError::Definite(message)
    } else {
        SinkError::Transient(message)
    }
}

/// A whole request the server refused: overload, server trouble and cluster blocks are
/// transient; credentials, privileges and malformed requests are not.
pub(crate) fn classify_status(context: &str, status: StatusCode, body: &[u8]) -> SinkError {
    let error = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").cloned());
    let kind = error
        .as_ref()
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let detail = error
        .as_ref()
        .map(describe_error)
        .unwrap_or_else(|| snippet(body));
    let code = status.as_u16();
    match code {
        408 | 429 | 500..=599 => SinkError::Transient(format!("{context}: HTTP {status}: {detail}")),
        // A cluster-wide block (`cluster.blocks.read_only`, flood stage on every index) refuses
        // the whole request with 403: it is lifted on the cluster, not fixed in the job.
        403 if kind == "cluster_block_exception" => SinkError::Transient(format!(
            "{context}: HTTP {status} (the cluster is blocked; retrying until the block is lifted): {detail}"
        )),
        401 | 403 => SinkError::Definite(format!(
            "{context}: HTTP {status} (check credentials and the user's index privileges): {detail}"
        )),
        413 => SinkError::Definite(format!(
            "{context}: HTTP {status} (the batch exceeds the cluster's http.max_content_length; lower the batch max_bytes): {detail}"
        )),
        _ => SinkError::Definite(format!("{context}: HTTP {status}: {detail}")),
    }
}

/// Index names must be lower case and free of `\ / * ? " < > | , # :` and spaces, and must not
/// start with `-`, `_` or `+`.
fn check_index_prefix(prefix: &str) -> Result<(), SinkError> {
    let bad_char = prefix
        .chars()
        .any(|c| c.is_uppercase() || c.is_whitespace() || r#"\/*?"<>|,#:"#.contains(c));
    if prefix.is_empty() || bad_char || prefix.starts_with(['-', '_', '+']) || prefix == "." {
        return Err(SinkError::Definite(format!(
            "`{prefix}` cannot start an Elasticsearch index name (lower case, no spaces or \\ / * ? \" < > | , # :, not starting with - _ +)"
        )));
    }
    Ok(())
}

/// Checks the cluster and installs the index template.
///
/// `GET /` must answer within `timeout` (which is also every later request's timeout); then
/// `template` (normally [`IOT_DATA_TEMPLATE`]; `None` to leave templates alone) is `PUT` as
/// `_index_template/{index_prefix}` with `index_patterns` set to `{index_prefix}-*`, so each
/// new daily index gets the mappings.
/// Credentials belong in `auth`; a URL carrying a password is refused, because URLs end up in
/// log lines.
pub async fn prepare(
    url: &str,
    auth: Auth,
    index_prefix: &str,
    template: Option<&str>,
    timeout: Duration,
) -> Result<Connection, SinkError> {
    let url = url.trim_end_matches('/').to_string();
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| SinkError::Definite(format!("Elasticsearch URL `{url}`: {e}")))?;
    if parsed.password().is_some() || !parsed.username().is_empty() {
        return Err(SinkError::Definite(
            "the Elasticsearch URL carries credentials; set the user and password (or API key) in the sink's auth settings instead".into(),
        ));
    }
    check_index_prefix(index_prefix)?;
    let template = match template {
        Some(text) => {
            let mut template: Value = serde_json::from_str(text)
                .map_err(|e| SinkError::Definite(format!("Elasticsearch index template: {e}")))?;
            let Some(object) = template.as_object_mut() else {
                return Err(SinkError::Definite(
                    "Elasticsearch index template is not a JSON object".into(),
                ));
            };
            object.insert(
                "index_patterns".into(),
                Value::from(vec![format!("{index_prefix}-*")]),
            );
            Some(template)
        }
        None => None,
    };

    let client = Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| request_error("building the Elasticsearch client", e))?;
    let mut connection = Connection {
        client,
        url,
        auth,
        version: "unknown".into(),
    };

    let context = || format!("checking Elasticsearch at {}", connection.url);
    let (status, body) = connection
        .send(
            connection.client.get(format!("{}/", connection.url)),
            &context,
        )
        .await?;
    if !status.is_success() {
        return Err(classify_status(&context(), status, &body));
    }
    let version = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/version/number")?.as_str().map(str::to_string));

    if let Some(template) = template {
        let context = || {
            format!(
                "installing index template `{index_prefix}` on Elasticsearch at {}",
                connection.url
            )
        };
        let request = connection
            .client
            .put(format!("{}/_index_template/{index_prefix}", connection.url))
            .header(CONTENT_TYPE, "application/json")
            .body(template.to_string());
        let (status, body) = connection.send(request, &context).await?;
        if !status.is_success() {
            return Err(classify_status(&context(), status, &body));
        }
    }
    if let Some(version) = version {
        connection.version = version;
    }
    tracing::info!(url = %connection.url, version = %connection.version, index_prefix, "Elasticsearch sink ready");
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_request_statuses() {
        let t = |s: u16| classify_status("x", StatusCode::from_u16(s).unwrap(), b"");
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(t(s).is_transient(), "{s}");
        }
        for s in [400, 404, 413] {
            assert!(!t(s).is_transient(), "{s}");
        }
        for s in [401, 403] {
            let e = t(s);
            assert!(!e.is_transient());
            assert!(e.to_string().contains("check credentials"));
        }
        // A cluster-wide block refuses whole requests with 403: lifted on the cluster, so
        // transient, unlike a 403 about privileges.
        let blocked = br#"{"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/6/cluster read-only (api)];"}],"type":"cluster_block_exception","reason":"blocked by: [FORBIDDEN/6/cluster read-only (api)];"},"status":403}"#;
        let e = classify_status("x", StatusCode::FORBIDDEN, blocked);
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("cluster read-only"), "{e}");
        let denied = br#"{"error":{"type":"security_exception","reason":"action [indices:data/write/bulk] is unauthorized for user [u]"},"status":403}"#;
        assert!(!classify_status("x", StatusCode::FORBIDDEN, denied).is_transient());
        let body = br#"{"error":{"type":"security_exception","reason":"unable to authenticate user [u]"},"status":401}"#;
        assert!(classify_status("x", StatusCode::UNAUTHORIZED, body)
            .to_string()
            .contains("security_exception: unable to authenticate user [u]"));
    }

    #[test]
    fn index_prefixes() {
        assert!(check_index_prefix("iot-data").is_ok());
        assert!(check_index_prefix("iot_data.v2").is_ok());
        for bad in ["", "IoT", "_iot", "-iot", "iot data", "iot*", "a/b", "a:b"] {
            assert!(check_index_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let basic = Auth::Basic {
            user: "elastic".into(),
            password: "hunter2".into(),
        };
        let text = format!("{basic:?}");
        assert!(
            text.contains("elastic") && !text.contains("hunter2"),
            "{text}"
        );
        let key = Auth::ApiKey("c2VjcmV0OmtleQ==".into());
        assert!(!format!("{key:?}").contains("c2VjcmV0"));
    }

    #[test]
    fn the_template_is_valid_json_with_the_mappings() {
        let t: Value = serde_json::from_str(IOT_DATA_TEMPLATE).unwrap();
        let p = &t["template"]["mappings"]["properties"];
        assert_eq!(p["location"]["type"], "geo_point");
        assert_eq!(p["event_time"]["format"], "yyyy-MM-dd HH:mm:ss.SSS");
        assert_eq!(p["kafka_ts"]["format"], "epoch_millis");
        for k in [
            "pboxid",
            "company",
            "site",
            "line",
            "device_name",
            "model",
            "device_status",
        ] {
            assert_eq!(p[k]["type"], "keyword", "{k}");
        }
    }
}
