//! Reading a `_bulk` response item by item.
//!
//! The documented shape is
//! `{"took":..,"errors":bool,"items":[{"index":{"_index":..,"_id":..,"status":201,"error":{"type":..,"reason":..}}}]}`,
//! one item per action, in request order. `errors: false` only says no item failed; each item
//! still gets classified, so a response that does not match the request (wrong item count) is
//! noticed rather than taken as success.

use iotflow_sink::SinkError;
use serde_json::Value;

use crate::retry::{classify_item, cluster_error};

/// What became of one action of a bulk request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ItemOutcome {
    /// 2xx: the document is stored.
    Stored,
    /// 429 or 5xx (rejected execution, shard unavailable): sending the item again can succeed.
    Retry(String),
    /// Any other status (400 `mapper_parsing_exception`, `strict_dynamic_mapping_exception`,
    /// ...): the document itself is wrong; it goes to the dead letters.
    Rejected(String),
    /// The item was refused for a reason about the cluster or the index, not the document
    /// ([`cluster_error`](crate::retry::cluster_error)): every document of that index would be refused alike, so the whole
    /// write fails with this error (transient or definite) instead of dead-lettering them.
    Sink(SinkError),
}

/// Parses a bulk response body into one outcome per action, in request order. Fails when the
/// body is not a bulk response or does not have exactly `expected` items.
pub fn parse_bulk_response(body: &[u8], expected: usize) -> Result<Vec<ItemOutcome>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("bulk response is not JSON ({e}): {}", snippet(body)))?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("bulk response has no `items`: {}", snippet(body)))?;
    if items.len() != expected {
        return Err(format!(
            "bulk response has {} items for {expected} actions",
            items.len()
        ));
    }
    items.iter().map(item_outcome).collect()
}

fn item_outcome(item: &Value) -> Result<ItemOutcome, String> {
    // `{"index": {...}}` (or `create`/`update`/`delete`): the one value is the result.
    let result = item
        .as_object()
        .and_then(|o| o.values().next())
        .ok_or_else(|| format!("bulk response item is not an action result: {item}"))?;
    let status = result
        .get("status")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("bulk response item has no status: {item}"))?;
    let error = result.get("error");
    let mut reason = format!("status {status}");
    if let Some(error) = error {
        reason.push_str(": ");
        reason.push_str(&describe_error(error));
    }
    if !(200..=299).contains(&status) {
        let text = |key: &str| {
            error
                .and_then(|e| e.get(key))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let index = result.get("_index").and_then(Value::as_str).unwrap_or("?");
        if let Some(e) = cluster_error(status, text("type"), text("reason"), index, &reason) {
            return Ok(ItemOutcome::Sink(e));
        }
    }
    Ok(classify_item(status, reason))
}

/// `type: reason (caused by type: reason)`, from an Elasticsearch error object.
pub(crate) fn describe_error(error: &Value) -> String {
    let Some(object) = error.as_object() else {
        return error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string);
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("?");
    let mut out = format!("{}: {}", text("type"), text("reason"));
    if let Some(cause) = object.get("caused_by") {
        out.push_str(&format!(" (caused by {})", describe_error(cause)));
    }
    out
}

/// The start of a body, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_item() {
        let body = br#"{"took":30,"errors":true,"items":[
            {"index":{"_index":"iot-data-2025.04.10","_id":"0-1-1","_version":1,"result":"created","status":201}},
            {"index":{"_index":"iot-data-2025.04.10","_id":"0-2-1","result":"updated","status":200}},
            {"index":{"_index":"iot-data-2025.04.10","_id":"0-3-1","status":429,"error":{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}}},
            {"index":{"_index":"iot-data-2025.04.10","_id":"0-4-1","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}},
            {"index":{"_index":"iot-data-2025.04.10","_id":"0-5-1","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [metric] of type [double]","caused_by":{"type":"number_format_exception","reason":"For input string: \"abc\""}}}}
        ]}"#;
        let outcomes = parse_bulk_response(body, 5).unwrap();
        assert_eq!(outcomes[0], ItemOutcome::Stored);
        assert_eq!(outcomes[1], ItemOutcome::Stored);
        assert_eq!(
            outcomes[2],
            ItemOutcome::Retry(
                "status 429: es_rejected_execution_exception: rejected execution of coordinating operation".into()
            )
        );
        assert!(
            matches!(&outcomes[3], ItemOutcome::Retry(r) if r.contains("unavailable_shards_exception"))
        );
        assert_eq!(
            outcomes[4],
            ItemOutcome::Rejected(
                "status 400: mapper_parsing_exception: failed to parse field [metric] of type [double] (caused by number_format_exception: For input string: \"abc\")".into()
            )
        );
    }

    #[test]
    fn malformed_responses_are_errors() {
        assert!(parse_bulk_response(b"<html>502 Bad Gateway</html>", 1).is_err());
        assert!(parse_bulk_response(br#"{"took":1,"errors":false}"#, 1).is_err());
        let one = br#"{"took":1,"errors":false,"items":[{"index":{"status":201}}]}"#;
        assert!(parse_bulk_response(one, 2)
            .unwrap_err()
            .contains("1 items for 2 actions"));
        assert!(parse_bulk_response(br#"{"items":[{"index":{}}]}"#, 1).is_err());
        assert_eq!(
            parse_bulk_response(one, 1).unwrap(),
            vec![ItemOutcome::Stored]
        );
    }

    /// One bulk response item, as a cluster writes it.
    fn item(index: &str, status: u16, error: &str) -> String {
        format!(
            r#"{{"index":{{"_index":"{index}","_id":"0-1-1744272000000","status":{status},"error":{error}}}}}"#
        )
    }

    fn outcomes(items: &[String]) -> Vec<ItemOutcome> {
        let body = format!(
            r#"{{"took":5,"errors":true,"items":[{}]}}"#,
            items.join(",")
        );
        parse_bulk_response(body.as_bytes(), items.len()).unwrap()
    }

    #[test]
    fn cluster_blocks_and_the_shard_limit_are_transient_for_the_whole_write() {
        let day = "iot-data-2025.04.10";
        let items = [
            // Elasticsearch 7.4+ at the flood-stage disk watermark.
            item(
                day,
                429,
                r#"{"type":"cluster_block_exception","reason":"index [iot-data-2025.04.10] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"}"#,
            ),
            // Older versions at the flood stage, and a write block set by an operator.
            item(
                day,
                403,
                r#"{"type":"cluster_block_exception","reason":"index [iot-data-2025.04.10] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];"}"#,
            ),
            item(
                day,
                403,
                r#"{"type":"cluster_block_exception","reason":"index [iot-data-2025.04.10] blocked by: [FORBIDDEN/8/index write (api)];"}"#,
            ),
            // A cluster with no master.
            item(
                day,
                503,
                r#"{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"}"#,
            ),
            // The daily index cannot be created: shard limit (8.x and 7.x wording).
            item(
                day,
                400,
                r#"{"type":"validation_exception","reason":"Validation Failed: 1: this action would add [2] shards, but this cluster currently has [1000]/[1000] maximum normal shards open;"}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"illegal_argument_exception","reason":"Validation Failed: 1: this action would add [2] total shards, but this cluster currently has [1000]/[1000] maximum shards open;"}"#,
            ),
        ];
        for (i, outcome) in outcomes(&items).into_iter().enumerate() {
            let ItemOutcome::Sink(e) = outcome else {
                panic!("item {i} is not a sink-wide error: {outcome:?}");
            };
            assert!(e.is_transient(), "item {i}: {e}");
            let text = e.to_string();
            assert!(text.contains("index `iot-data-2025.04.10`"), "{text}");
            assert!(text.contains("retrying until it clears"), "{text}");
        }
    }

    #[test]
    fn missing_privileges_no_auto_create_and_closed_indices_are_definite() {
        let day = "iot-data-2025.04.10";
        let items = [
            item(
                day,
                403,
                r#"{"type":"security_exception","reason":"action [indices:data/write/bulk[s]] is unauthorized for user [iotflow] with effective roles [iot_reader] on indices [iot-data-2025.04.10], this action is granted by the index privileges [create_doc,create,index,write,all]"}"#,
            ),
            item(
                day,
                404,
                r#"{"type":"index_not_found_exception","reason":"no such index [iot-data-2025.04.10] and [action.auto_create_index] ([.monitoring*,.watches,logs-*]) doesn't match","index_uuid":"_na_","index":"iot-data-2025.04.10"}"#,
            ),
            item(
                day,
                404,
                r#"{"type":"index_not_found_exception","reason":"no such index [iot-data-2025.04.10] and [action.auto_create_index] is [false]","index_uuid":"_na_","index":"iot-data-2025.04.10"}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"index_closed_exception","reason":"closed","index_uuid":"kQyD8mFzQb2xJ0e1VbCm4w","index":"iot-data-2025.04.10"}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"illegal_argument_exception","reason":"no write index is defined for alias [iot-data-2025.04.10]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"}"#,
            ),
        ];
        let hints = [
            "create_doc/index privilege",
            "action.auto_create_index",
            "action.auto_create_index",
            "the index is closed",
            "no write index",
        ];
        for ((i, outcome), hint) in outcomes(&items).into_iter().enumerate().zip(hints) {
            let ItemOutcome::Sink(e) = outcome else {
                panic!("item {i} is not a sink-wide error: {outcome:?}");
            };
            assert!(!e.is_transient(), "item {i}: {e}");
            let text = e.to_string();
            assert!(text.contains(hint), "item {i}: {text}");
            // The cluster's own words stay in the message.
            assert!(text.contains("status 40"), "{text}");
        }
        // A 404 or 403 item without an error object is about the index all the same.
        let bare = r#"{"took":1,"errors":true,"items":[{"index":{"_index":"x","status":404}},{"index":{"_index":"x","status":403}}]}"#;
        for outcome in parse_bulk_response(bare.as_bytes(), 2).unwrap() {
            assert!(
                matches!(outcome, ItemOutcome::Sink(SinkError::Definite(_))),
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn document_errors_stay_dead_letters() {
        let day = "iot-data-2025.04.10";
        let items = [
            item(
                day,
                400,
                r#"{"type":"mapper_parsing_exception","reason":"failed to parse field [location] of type [geo_point]","caused_by":{"type":"illegal_argument_exception","reason":"illegal latitude value [95.5] for location"}}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"document_parsing_exception","reason":"[1:42] failed to parse field [metric] of type [double] in document with id '0-1-1744272000000'"}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"strict_dynamic_mapping_exception","reason":"[1:120] mapping set to strict, dynamic introduction of [surprise] within [_doc] is not allowed"}"#,
            ),
            item(
                day,
                400,
                r#"{"type":"illegal_argument_exception","reason":"Document contains at least one immense term in field=\"company\" (whose UTF8 encoding is longer than the max length 32766)"}"#,
            ),
            item(
                day,
                409,
                r#"{"type":"version_conflict_engine_exception","reason":"[0-1-1744272000000]: version conflict"}"#,
            ),
        ];
        for (i, outcome) in outcomes(&items).into_iter().enumerate() {
            assert!(
                matches!(outcome, ItemOutcome::Rejected(_)),
                "item {i}: {outcome:?}"
            );
        }
        // Throttling stays a per-item retry.
        let throttled = item(
            day,
            429,
            r#"{"type":"es_rejected_execution_exception","reason":"rejected execution of coordinating operation"}"#,
        );
        assert!(matches!(outcomes(&[throttled])[0], ItemOutcome::Retry(_)));
    }
}
