//! Which Elasticsearch failures are worth retrying: whole requests (no answer, or an HTTP
//! error status) and single bulk items.
//!
//! A bulk response says what became of each document: 429 and 5xx items are sent again
//! ([`ITEM_RETRY_STATUSES`]); refusals about the cluster or the index rather than the document
//! ([`cluster_error`]) fail the whole write, transient or definite; any other refusal is the
//! document's own fault and it goes to the dead letters.

use iotflow_sink::SinkError;
use reqwest::StatusCode;
use serde_json::Value;

use crate::response::{describe_error, snippet, ItemOutcome};

/// HTTP statuses of a whole request that go away by themselves: timeout, throttling, server
/// trouble. (A 403 cluster block is transient too; see [`classify_status`].)
pub const TRANSIENT_STATUSES: &[std::ops::RangeInclusive<u16>] = &[408..=408, 429..=429, 500..=599];

/// HTTP statuses of a bulk item that sending the item again can fix (rejected execution,
/// shard unavailable). Other non-2xx items are the document's fault (after
/// [`cluster_error`]).
pub const ITEM_RETRY_STATUSES: &[std::ops::RangeInclusive<u16>] = &[429..=429, 500..=599];

fn among(status: u16, table: &[std::ops::RangeInclusive<u16>]) -> bool {
    table.iter().any(|r| r.contains(&status))
}

/// A request that got no HTTP answer: connection refused or cut, timeout, TLS trouble. Only a
/// request that could not be built is definite. The URL is left out of reqwest's message (the
/// context names the cluster).
pub fn classify(context: &str, e: &reqwest::Error) -> SinkError {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut message = format!("{context}: {text}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_builder() {
        SinkError::Definite(message)
    } else {
        SinkError::Transient(message)
    }
}

/// A whole request the server refused: overload, server trouble and cluster blocks are
/// transient; credentials, privileges and malformed requests are not.
pub fn classify_status(context: &str, status: StatusCode, body: &[u8]) -> SinkError {
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
    if among(code, TRANSIENT_STATUSES) {
        return SinkError::Transient(format!("{context}: HTTP {status}: {detail}"));
    }
    match code {
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

/// An item error that is about the cluster or the target index rather than the document, as
/// the error the whole write should fail with; `None` for document-level errors.
///
/// * Transient (the sink stalls and retries, losing nothing, until the cluster is fixed):
///   `cluster_block_exception` (flood-stage disk watermark, read-only or write blocks, a
///   cluster without a master or still recovering), and the cluster's shard limit
///   (`... maximum shards open` / `maximum normal shards open`, when a new daily index cannot
///   be created): both are cleared on the cluster (disk freed, block lifted, old indices
///   deleted by retention or the limit raised) with no change to the job.
/// * Definite (the job stops and says what to fix): `security_exception` and any other 401 or
///   403 (the user lacks index privileges), `index_not_found_exception` and any other 404 (the
///   cluster does not auto-create the daily index: `action.auto_create_index` excludes it),
///   `index_closed_exception`, and an alias without a write index. Nothing in the cluster
///   undoes these by itself; they need a deliberate decision, and every later document of the
///   index would hit them too.
///
/// `status` is the item's HTTP status, `kind` and `reason` the error's `type` and `reason`,
/// `index` the item's `_index`, `text` the full description kept in the message.
pub fn cluster_error(
    status: u16,
    kind: &str,
    reason: &str,
    index: &str,
    text: &str,
) -> Option<SinkError> {
    let transient = |hint: &str| {
        Some(SinkError::Transient(format!(
            "Elasticsearch refused documents for index `{index}` for a reason about the cluster, not the documents ({hint}); retrying until it clears: {text}"
        )))
    };
    let definite = |hint: &str| {
        Some(SinkError::Definite(format!(
            "Elasticsearch refused documents for index `{index}` for a reason about the cluster, not the documents ({hint}): {text}"
        )))
    };
    if kind == "cluster_block_exception" {
        return transient("the index or cluster is blocked: disk watermark, read-only or write block, or no master");
    }
    if reason.contains("shards open") && reason.contains("this action would add") {
        return transient("the cluster is at its shard limit, cluster.max_shards_per_node: free shards or raise it");
    }
    if kind == "security_exception" || status == 401 || status == 403 {
        return definite("grant the user the create_doc/index privilege on the index pattern");
    }
    if kind == "index_not_found_exception" || status == 404 {
        return definite("the index does not exist and the cluster does not create it: allow action.auto_create_index for the prefix, or create the daily indices ahead");
    }
    if kind == "index_closed_exception" {
        return definite("the index is closed: open it, or stop sending its days");
    }
    if reason.contains("no write index is defined for alias") {
        return definite("the alias has no write index: set is_write_index on one of its indices");
    }
    None
}

/// Classifies one item by its HTTP status alone; `reason` is kept for the retry or reject
/// message. [`parse_bulk_response`](crate::response::parse_bulk_response) asks
/// [`cluster_error`] first, so 401, 403 and 404 items and cluster-level errors never get here
/// from a response.
pub fn classify_item(status: u16, reason: String) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Stored,
        s if among(s, ITEM_RETRY_STATUSES) => ItemOutcome::Retry(reason),
        _ => ItemOutcome::Rejected(reason),
    }
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

    #[tokio::test]
    async fn a_request_without_answer_is_transient_and_its_url_stays_out() {
        // Nothing listens on the discard port of loopback: the connection is refused.
        let e = reqwest::Client::new()
            .get("http://127.0.0.1:9/_bulk?token=secret")
            .send()
            .await
            .unwrap_err();
        let classified = classify("bulk-indexing 1 documents into Elasticsearch", &e);
        assert!(classified.is_transient(), "{classified}");
        let text = classified.to_string();
        assert!(
            !text.contains("secret") && !text.contains("127.0.0.1:9"),
            "{text}"
        );
        assert!(text.contains("bulk-indexing 1 documents"), "{text}");
    }

    #[test]
    fn other_client_errors_are_definite() {
        for status in [400, 409, 413] {
            assert!(matches!(
                classify_item(status, String::new()),
                ItemOutcome::Rejected(_)
            ));
        }
        for status in [429, 500, 502, 503, 504] {
            assert!(matches!(
                classify_item(status, String::new()),
                ItemOutcome::Retry(_)
            ));
        }
    }
}
