//! Reading a `_bulk` response item by item.
//!
//! The documented shape is
//! `{"took":..,"errors":bool,"items":[{"index":{"_index":..,"_id":..,"status":201,"error":{"type":..,"reason":..}}}]}`,
//! one item per action, in request order. `errors: false` only says no item failed; each item
//! still gets classified, so a response that does not match the request (wrong item count) is
//! noticed rather than taken as success.

use serde_json::Value;

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
}

/// Classifies one item by its HTTP status; `reason` is kept for the retry or reject message.
pub fn classify_item(status: u16, reason: String) -> ItemOutcome {
    match status {
        200..=299 => ItemOutcome::Stored,
        429 | 500..=599 => ItemOutcome::Retry(reason),
        _ => ItemOutcome::Rejected(reason),
    }
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
    let mut reason = format!("status {status}");
    if let Some(error) = result.get("error") {
        reason.push_str(": ");
        reason.push_str(&describe_error(error));
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
    fn other_client_errors_are_definite() {
        for status in [400, 404, 409, 413] {
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
}
