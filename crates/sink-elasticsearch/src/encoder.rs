//! Rows to an NDJSON `_bulk` body: per row one action line and one source line, each ending in
//! `\n` (the bulk API requires the final newline too).
//!
//! JSON is written by hand rather than through a serializer so decimals go out as the exact
//! text of the [`Decimal`](iotflow_model::Decimal) (`Decimal`'s `Display` never uses exponent
//! notation, so that text is a valid JSON number literal), never through `f64`. Strings are
//! escaped by `serde_json`.

use std::fmt::Write as _;

use iotflow_sink::TEXT_COLUMNS;

use crate::row::{doc_id, index_name};
use crate::Row;

/// The bulk body for `rows`, each into its daily index `{index_prefix}-YYYY.MM.DD`, with
/// action `index` (create or overwrite: re-delivered rows replace themselves).
pub fn encode_bulk<'a>(rows: impl IntoIterator<Item = &'a Row>, index_prefix: &str) -> Vec<u8> {
    let mut out = String::new();
    for row in rows {
        encode_row(row, index_prefix, &mut out);
    }
    out.into_bytes()
}

/// Appends one row's action and source lines to `out`.
pub fn encode_row(row: &Row, index_prefix: &str, out: &mut String) {
    out.push_str(r#"{"index":{"_index":"#);
    push_json_str(out, &index_name(row, index_prefix));
    out.push_str(r#","_id":"#);
    push_json_str(out, &doc_id(row));
    out.push_str("}}\n");
    encode_source(row, out);
    out.push('\n');
}

/// The document as Elasticsearch stores it (the source line of [`encode_row`], without its
/// newline): also the payload of its dead letter when the cluster refuses it, so the dead
/// letter shows exactly what was refused.
pub fn source_document(row: &Row) -> String {
    let mut out = String::new();
    encode_source(row, &mut out);
    out
}

/// Appends one row's source object (no newline) to `out`.
fn encode_source(row: &Row, out: &mut String) {
    // Writing to a String cannot fail: each `let _ =` below drops an always-Ok result.
    let _ = write!(
        out,
        r#"{{"event_time":"{}","pboxid":"#,
        row.event_time.format("%Y-%m-%d %H:%M:%S%.3f")
    );
    push_json_str(out, &row.pboxid);
    let _ = write!(
        out,
        r#","metric":{},"location":{{"lat":{},"lon":{}}}"#,
        row.metric, row.latitude, row.longitude
    );
    for (name, value) in TEXT_COLUMNS.iter().zip(row.texts()) {
        if let Some(value) = value {
            let _ = write!(out, r#","{name}":"#);
            push_json_str(out, value);
        }
    }
    if let Some(t) = row.work_threshold {
        let _ = write!(out, r#","work_threshold":{t}"#);
    }
    let _ = write!(
        out,
        r#","src_partition":{},"src_offset":{}"#,
        row.src_partition, row.src_offset
    );
    if let Some(ts) = row.kafka_ts_ms {
        let _ = write!(out, r#","kafka_ts":{ts}"#);
    }
    out.push('}');
}

/// `s` as a JSON string literal: quotes, backslashes and control characters escaped, other
/// Unicode written as is (UTF-8).
fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{Decimal, NaiveDateTime};
    use std::str::FromStr;

    fn row() -> Row {
        Row {
            event_time: NaiveDateTime::parse_from_str(
                "2025-04-10 08:00:01.250",
                "%Y-%m-%d %H:%M:%S%.f",
            )
            .unwrap(),
            pboxid: "box-1".into(),
            metric: Decimal::from_str("12345678901234567.123456789").unwrap(),
            latitude: Decimal::from_str("-31.20000000").unwrap(),
            longitude: Decimal::from_str("121.47370001").unwrap(),
            company: None,
            site: None,
            line: None,
            device_name: None,
            model: None,
            device_status: None,
            work_threshold: None,
            src_partition: 3,
            src_offset: 9,
            kafka_ts_ms: None,
        }
    }

    #[test]
    fn body_bytes_are_exact() {
        let mut full = row();
        full.company = Some("ACME".into());
        full.site = Some("S1".into());
        full.line = Some("L2".into());
        full.device_name = Some("press".into());
        full.model = Some("M-7".into());
        full.device_status = Some("running".into());
        full.work_threshold = Some(Decimal::from_str("50.5").unwrap());
        full.kafka_ts_ms = Some(1_744_272_001_999);
        let body = encode_bulk([&row(), &full], "iot-data");
        let expected = concat!(
            r#"{"index":{"_index":"iot-data-2025.04.10","_id":"3-9-1744272001250"}}"#,
            "\n",
            r#"{"event_time":"2025-04-10 08:00:01.250","pboxid":"box-1","metric":12345678901234567.123456789,"location":{"lat":-31.20000000,"lon":121.47370001},"src_partition":3,"src_offset":9}"#,
            "\n",
            r#"{"index":{"_index":"iot-data-2025.04.10","_id":"3-9-1744272001250"}}"#,
            "\n",
            r#"{"event_time":"2025-04-10 08:00:01.250","pboxid":"box-1","metric":12345678901234567.123456789,"location":{"lat":-31.20000000,"lon":121.47370001},"company":"ACME","site":"S1","line":"L2","device_name":"press","model":"M-7","device_status":"running","work_threshold":50.5,"src_partition":3,"src_offset":9,"kafka_ts":1744272001999}"#,
            "\n",
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
        assert_eq!(
            source_document(&full),
            expected.lines().nth(3).unwrap(),
            "the dead letter's document is the source line"
        );
    }

    #[test]
    fn every_line_is_json_and_decimals_keep_their_text() {
        let body = encode_bulk([&row()], "iot");
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        // With arbitrary precision off, serde_json would read the metric as f64; the text,
        // though, is the exact decimal.
        assert!(lines[1].contains(r#""metric":12345678901234567.123456789,"#));
    }

    #[test]
    fn strings_are_escaped() {
        let mut r = row();
        r.pboxid = "q\"uo\\te\n\t\u{1}é✓".into();
        r.company = Some("Ünïcødé 公司 \u{1F600} </script>".into());
        let text = String::from_utf8(encode_bulk([&r], "iot-data")).unwrap();
        let source = text.lines().nth(1).unwrap();
        assert!(
            source.contains(r#""pboxid":"q\"uo\\te\n\t\u0001é✓""#),
            "{source}"
        );
        assert!(source.contains(r#""company":"Ünïcødé 公司 😀 </script>""#));
        // Control characters never break the line structure.
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(source).unwrap();
        assert_eq!(v["pboxid"], r.pboxid.as_str());
        assert_eq!(v["company"], r.company.as_deref().unwrap());
    }

    #[test]
    fn negative_and_small_decimals_are_valid_literals() {
        let mut r = row();
        r.metric = Decimal::from_str("-0.00000001").unwrap();
        r.latitude = Decimal::from_str("0").unwrap();
        r.longitude = Decimal::from_str("-180.0").unwrap();
        let text = String::from_utf8(encode_bulk([&r], "iot-data")).unwrap();
        let source = text.lines().nth(1).unwrap();
        assert!(source.contains(r#""metric":-0.00000001,"location":{"lat":0,"lon":-180.0}"#));
        serde_json::from_str::<serde_json::Value>(source).unwrap();
    }
}
