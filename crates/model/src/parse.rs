//! The reading parser: JSON bytes from `iot-topic` into a validated [`ParsedReading`].
//!
//! Numbers are read from their JSON text, not through `f64`, so `12345678.123456789` stays
//! exactly that. Numeric strings (`"12.5"`) are accepted too, as the Flink job's Jackson mapping
//! did. Every rejection names the field and what was wrong with it.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDateTime};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{columns, Zone};

mod fast;

/// A reading that parsed and validated, before it is tagged with its Kafka source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedReading {
    /// Local wall time in the configured zone.
    pub event_time: NaiveDateTime,
    /// Exact metric value.
    pub metric: Decimal,
    /// Device id.
    pub pboxid: String,
    /// Latitude in degrees.
    pub latitude: Decimal,
    /// Longitude in degrees.
    pub longitude: Decimal,
}

/// Limits applied while parsing.
#[derive(Clone, Copy, Debug)]
pub struct ParseLimits {
    /// Payloads larger than this are rejected before any parsing.
    pub max_message_bytes: usize,
    /// Earliest accepted year of `event_time`.
    pub min_year: i32,
    /// Latest accepted year of `event_time`.
    pub max_year: i32,
    /// Plausibility window, see [`check_window`]: how far (ms) `event_time` may lie before
    /// the record's reference time; 0 = no limit.
    pub max_event_age_ms: i64,
    /// How far (ms) `event_time` may lie after the record's reference time; 0 = no limit.
    pub max_event_lead_ms: i64,
}

impl Default for ParseLimits {
    fn default() -> Self {
        ParseLimits {
            max_message_bytes: 64 * 1024,
            min_year: 1970,
            max_year: 2099,
            max_event_age_ms: 0,
            max_event_lead_ms: 0,
        }
    }
}

/// Why a record was rejected. `Display` says what was wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The payload is larger than `max_message_bytes`.
    #[error("message of {bytes} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Payload size.
        bytes: usize,
        /// Configured limit.
        max: usize,
    },
    /// The record had no payload at all.
    #[error("empty message (no payload)")]
    Empty,
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Valid JSON, but not an object (an array, a string, a number, ...).
    #[error("a reading must be a JSON object, found {found}")]
    NotObject {
        /// What the payload starts with.
        found: &'static str,
    },
    /// `event_time` lies outside the plausibility window around the record's time.
    #[error("field `event_time` = {value} is outside the accepted window [{earliest}, {latest}] around the record's time {reference} (parse.max_event_age_secs / parse.max_event_lead_secs)")]
    OutOfWindow {
        /// The event time.
        value: String,
        /// The reference time (the Kafka timestamp, in the configured zone).
        reference: String,
        /// Earliest accepted event time.
        earliest: String,
        /// Latest accepted event time.
        latest: String,
    },
    /// A required field is absent or `null`.
    #[error("missing or null field `{field}`")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
        /// A short excerpt of what it was.
        found: String,
    },
    /// A field is outside its valid range.
    #[error("field `{field}` = {value} is out of range {range}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// The value as sent.
        value: String,
        /// The valid range.
        range: &'static str,
    },
    /// `event_time` is in no accepted format.
    #[error("field `event_time` = {value:?} is not `yyyy-MM-dd HH:mm:ss[.fff]` or RFC 3339")]
    BadTime {
        /// The value as sent.
        value: String,
    },
    /// `pboxid` breaks the id rules.
    #[error("field `pboxid` is invalid: {reason}")]
    BadPboxid {
        /// What rule it broke.
        reason: String,
    },
}

impl ParseError {
    pub(crate) fn json(e: serde_json::Error) -> Self {
        ParseError::Json(e.to_string())
    }

    /// A short, fixed code for the kind of failure (a metric label, a DLQ header).
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "too_large",
            ParseError::Empty => "empty",
            ParseError::Json(_) => "invalid_json",
            ParseError::NotObject { .. } => "not_object",
            ParseError::OutOfWindow { .. } => "out_of_window",
            ParseError::Missing { .. } => "missing_field",
            ParseError::WrongType { .. } => "wrong_type",
            ParseError::OutOfRange { .. } => "out_of_range",
            ParseError::BadTime { .. } => "bad_event_time",
            ParseError::BadPboxid { .. } => "bad_pboxid",
        }
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event_time: Option<&'a RawValue>,
    #[serde(borrow)]
    metric: Option<&'a RawValue>,
    #[serde(borrow)]
    pboxid: Option<&'a RawValue>,
    #[serde(borrow)]
    latitude: Option<&'a RawValue>,
    #[serde(borrow)]
    longitude: Option<&'a RawValue>,
}

/// Parses and validates one reading.
///
/// ```
/// use iotflow_model::{parse_reading, ParseLimits, Zone};
/// let r = parse_reading(
///     br#"{"event_time":"2025-04-10 08:00:00.250","metric":51.25,"pboxid":"pbox-1","latitude":31.2304,"longitude":121.4737}"#,
///     &Zone::Utc,
///     &ParseLimits::default(),
/// ).unwrap();
/// assert_eq!(r.metric.to_string(), "51.25");
/// ```
///
/// Readings of the common shape take a single-pass scanner (`parse/fast.rs`); anything it is not
/// sure of, every error included, goes through [`parse_reading_reference`], so both give the
/// same results and the same messages.
pub fn parse_reading(
    payload: &[u8],
    zone: &Zone,
    limits: &ParseLimits,
) -> Result<ParsedReading, ParseError> {
    match fast::parse(payload, zone, limits) {
        Some(reading) => Ok(reading),
        None => parse_reading_reference(payload, zone, limits),
    }
}

/// The fast path alone: `Some` only for a reading it is sure of, `None` to ask
/// [`parse_reading_reference`]. Public only for the differential test; use [`parse_reading`].
#[doc(hidden)]
pub fn parse_reading_fast(
    payload: &[u8],
    zone: &Zone,
    limits: &ParseLimits,
) -> Option<ParsedReading> {
    fast::parse(payload, zone, limits)
}

/// The reference parser (serde_json into `RawValue`s, decimals from their text, chrono's
/// parsers): what [`parse_reading`] means. Public only for the differential test and the
/// bench; use [`parse_reading`].
#[doc(hidden)]
pub fn parse_reading_reference(
    payload: &[u8],
    zone: &Zone,
    limits: &ParseLimits,
) -> Result<ParsedReading, ParseError> {
    if payload.len() > limits.max_message_bytes {
        return Err(ParseError::TooLarge {
            bytes: payload.len(),
            max: limits.max_message_bytes,
        });
    }
    if payload.is_empty() {
        return Err(ParseError::Empty);
    }
    check_object(payload)?;
    let wire: Wire = serde_json::from_slice(payload).map_err(ParseError::json)?;
    let event_time = required("event_time", wire.event_time)?;
    let event_time = parse_event_time(&string_field("event_time", event_time)?, zone)?;
    let year = event_time.year();
    if year < limits.min_year || year > limits.max_year {
        return Err(ParseError::OutOfRange {
            field: "event_time",
            value: event_time.to_string(),
            range: "of years [min_year, max_year] (default 1970-2099)",
        });
    }
    let metric = required_decimal("metric", wire.metric)?;
    if !columns::fits_decimal(metric, columns::METRIC_INT_DIGITS) {
        return Err(ParseError::OutOfRange {
            field: "metric",
            value: metric.to_string(),
            range: "(-1e16, 1e16) after rounding to 8 decimal places (DECIMAL(24,8))",
        });
    }
    let latitude = required_decimal("latitude", wire.latitude)?;
    if latitude < Decimal::from(-90) || latitude > Decimal::from(90) {
        return Err(ParseError::OutOfRange {
            field: "latitude",
            value: latitude.to_string(),
            range: "[-90, 90]",
        });
    }
    let longitude = required_decimal("longitude", wire.longitude)?;
    if longitude < Decimal::from(-180) || longitude > Decimal::from(180) {
        return Err(ParseError::OutOfRange {
            field: "longitude",
            value: longitude.to_string(),
            range: "[-180, 180]",
        });
    }
    let pboxid = string_field("pboxid", required("pboxid", wire.pboxid)?)?.into_owned();
    check_pboxid(&pboxid)?;
    Ok(ParsedReading {
        event_time,
        metric,
        pboxid,
        latitude,
        longitude,
    })
}

/// Rejects JSON that is not an object before serde reads it: serde reads a struct from an
/// array of its fields too, so `["2025-04-10 08:00:00", 51, "pbox-1", 31, 121]` would pass.
fn check_object(payload: &[u8]) -> Result<(), ParseError> {
    let found = match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => return Ok(()),
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        // Not JSON at all: serde says what is wrong and where.
        Some(_) => return Ok(()),
    };
    // Report invalid JSON as such, whatever it starts with.
    serde_json::from_slice::<serde::de::IgnoredAny>(payload).map_err(ParseError::json)?;
    Err(ParseError::NotObject { found })
}

/// Checks the plausibility window: `event_time` must lie within
/// [`ParseLimits::max_event_age_ms`] before and [`ParseLimits::max_event_lead_ms`] after
/// `reference_ms` (UTC epoch ms: the record's Kafka timestamp, so a record replayed after a
/// restart gets the same verdict as the first time), read as wall time in `zone`.
///
/// ```
/// use iotflow_model::{check_window, parse_reading, ParseLimits, Zone};
/// let limits = ParseLimits { max_event_age_ms: 86_400_000, max_event_lead_ms: 3_600_000, ..ParseLimits::default() };
/// let r = parse_reading(br#"{"event_time":"2025-04-10 08:00:00","metric":1,"pboxid":"p","latitude":0,"longitude":0}"#, &Zone::Utc, &limits).unwrap();
/// let at = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap().and_utc().timestamp_millis();
/// assert!(check_window(&r, &Zone::Utc, &limits, at("2025-04-10 20:00:00")).is_ok());
/// assert!(check_window(&r, &Zone::Utc, &limits, at("2025-04-11 08:00:01")).is_err());
/// assert!(check_window(&r, &Zone::Utc, &limits, at("2025-04-10 06:59:59")).is_err());
/// ```
pub fn check_window(
    reading: &ParsedReading,
    zone: &Zone,
    limits: &ParseLimits,
    reference_ms: i64,
) -> Result<(), ParseError> {
    if limits.max_event_age_ms <= 0 && limits.max_event_lead_ms <= 0 {
        return Ok(());
    }
    let Some(utc) = chrono::DateTime::from_timestamp_millis(reference_ms) else {
        return Ok(());
    };
    let reference = zone.local(&utc.fixed_offset());
    let span = |ms: i64| chrono::TimeDelta::try_milliseconds(ms).unwrap_or(chrono::TimeDelta::MAX);
    let earliest = (limits.max_event_age_ms > 0)
        .then(|| reference.checked_sub_signed(span(limits.max_event_age_ms)))
        .flatten();
    let latest = (limits.max_event_lead_ms > 0)
        .then(|| reference.checked_add_signed(span(limits.max_event_lead_ms)))
        .flatten();
    let t = reading.event_time;
    if earliest.is_some_and(|e| t < e) || latest.is_some_and(|l| t > l) {
        let show =
            |b: Option<NaiveDateTime>, open: &str| b.map_or(open.to_string(), |b| b.to_string());
        return Err(ParseError::OutOfWindow {
            value: t.to_string(),
            reference: reference.to_string(),
            earliest: show(earliest, "-inf"),
            latest: show(latest, "+inf"),
        });
    }
    Ok(())
}

/// Checks the device id rules: 1 to 64 characters, none of them control characters.
pub(crate) fn check_pboxid(id: &str) -> Result<(), ParseError> {
    let n = id.chars().count();
    if n == 0 {
        return Err(ParseError::BadPboxid {
            reason: "empty".into(),
        });
    }
    if n > columns::PBOXID_MAX_CHARS {
        return Err(ParseError::BadPboxid {
            reason: format!(
                "{n} characters, at most {} allowed",
                columns::PBOXID_MAX_CHARS
            ),
        });
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Err(ParseError::BadPboxid {
            reason: format!("contains the non-printable character {:?}", c),
        });
    }
    Ok(())
}

fn required<'a>(
    field: &'static str,
    raw: Option<&'a RawValue>,
) -> Result<&'a RawValue, ParseError> {
    raw.ok_or(ParseError::Missing { field })
}

fn excerpt(raw: &str) -> String {
    let mut s: String = raw.chars().take(40).collect();
    if s.len() < raw.len() {
        s.push('…');
    }
    s
}

fn string_field<'a>(field: &'static str, raw: &'a RawValue) -> Result<Cow<'a, str>, ParseError> {
    let text = raw.get();
    if !text.starts_with('"') {
        return Err(ParseError::WrongType {
            field,
            expected: "a string",
            found: excerpt(text),
        });
    }
    // Fast path: no escapes inside the quotes.
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(ParseError::json)
}

fn required_decimal(field: &'static str, raw: Option<&RawValue>) -> Result<Decimal, ParseError> {
    decimal_field(field, required(field, raw)?)?.ok_or(ParseError::Missing { field })
}

/// Reads a decimal from a JSON number or numeric string; `null` is `None`.
pub(crate) fn decimal_field(
    field: &'static str,
    raw: &RawValue,
) -> Result<Option<Decimal>, ParseError> {
    let text = raw.get();
    let number = match text.as_bytes().first() {
        Some(b'"') => string_field(field, raw)?,
        Some(b'-' | b'0'..=b'9') => Cow::Borrowed(text),
        _ if text == "null" => return Ok(None),
        _ => {
            return Err(ParseError::WrongType {
                field,
                expected: "a number",
                found: excerpt(text),
            })
        }
    };
    let number = number.trim();
    let parsed = if number.contains(['e', 'E']) {
        Decimal::from_scientific(number)
    } else {
        Decimal::from_str_exact(number)
    };
    parsed.map(Some).map_err(|e| match e {
        rust_decimal::Error::ErrorString(_) if !looks_numeric(number) => ParseError::WrongType {
            field,
            expected: "a number",
            found: excerpt(text),
        },
        e => ParseError::OutOfRange {
            field,
            value: excerpt(number),
            range: match e {
                rust_decimal::Error::Underflow => {
                    "of exactly representable decimals (too many digits)"
                }
                _ => "of representable decimals",
            },
        },
    })
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// `yyyy-MM-dd HH:mm:ss[.f…]` is kept as given; RFC 3339 is converted to `zone`.
fn parse_event_time(s: &str, zone: &Zone) -> Result<NaiveDateTime, ParseError> {
    let bad = || ParseError::BadTime { value: excerpt(s) };
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err(bad());
    }
    let has_zone = s.ends_with(['Z', 'z']) || {
        let tail = &b[19..];
        tail.iter().any(|&c| c == b'+' || c == b'-')
    };
    if !has_zone && b[10] == b' ' {
        // Local form: reject the RFC 3339 'T' spelling without an offset as ambiguous.
        return NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| bad());
    }
    if !has_zone {
        return Err(bad());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| zone.local(&t))
        .map_err(|_| bad())
}

impl ParsedReading {
    /// The reading, tagged with where it came from.
    pub fn into_reading(
        self,
        source: crate::SourceRef,
        kafka_ts_ms: Option<i64>,
    ) -> crate::Reading {
        crate::Reading {
            event_time: self.event_time,
            metric: self.metric,
            pboxid: self.pboxid,
            latitude: self.latitude,
            longitude: self.longitude,
            source,
            kafka_ts_ms,
        }
    }
}

impl fmt::Display for ParsedReading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} ({}, {})",
            self.event_time, self.pboxid, self.metric, self.latitude, self.longitude
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn p(json: &str) -> Result<ParsedReading, ParseError> {
        parse_reading(json.as_bytes(), &Zone::Utc, &ParseLimits::default())
    }

    fn ok(json: &str) -> ParsedReading {
        p(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    const GOOD: &str = r#"{"event_time":"2025-04-10 08:00:00","metric":51.5,"pboxid":"pbox-1","latitude":31.2304,"longitude":121.4737}"#;

    #[test]
    fn accepts_the_local_format_as_given() {
        let r = ok(GOOD);
        assert_eq!(r.event_time, t("2025-04-10 08:00:00"));
        assert_eq!(r.metric, dec("51.5"));
        assert_eq!(r.pboxid, "pbox-1");
        assert_eq!(r.latitude, dec("31.2304"));
        assert_eq!(r.longitude, dec("121.4737"));
        let r = ok(&GOOD.replace("08:00:00", "08:00:00.125"));
        assert_eq!(r.event_time, t("2025-04-10 08:00:00.125"));
        // The local form is never shifted, whatever the configured zone.
        let sh: Zone = "Asia/Shanghai".parse().unwrap();
        let r = parse_reading(GOOD.as_bytes(), &sh, &ParseLimits::default()).unwrap();
        assert_eq!(r.event_time, t("2025-04-10 08:00:00"));
    }

    #[test]
    fn converts_rfc3339_to_the_configured_zone() {
        let j = GOOD.replace("2025-04-10 08:00:00", "2025-04-10T08:00:00.5+08:00");
        assert_eq!(ok(&j).event_time, t("2025-04-10 00:00:00.5"));
        let j = GOOD.replace("2025-04-10 08:00:00", "2025-04-10T23:30:00Z");
        assert_eq!(ok(&j).event_time, t("2025-04-10 23:30:00"));
        let sh: Zone = "Asia/Shanghai".parse().unwrap();
        let r = parse_reading(j.as_bytes(), &sh, &ParseLimits::default()).unwrap();
        assert_eq!(
            r.event_time,
            t("2025-04-11 07:30:00"),
            "crosses the day in Shanghai"
        );
        let plus2: Zone = "+02:00".parse().unwrap();
        let r = parse_reading(j.as_bytes(), &plus2, &ParseLimits::default()).unwrap();
        assert_eq!(r.event_time, t("2025-04-11 01:30:00"));
    }

    #[test]
    fn decimals_are_exact() {
        let j = GOOD.replace("51.5", "12345678.123456789");
        assert_eq!(ok(&j).metric.to_string(), "12345678.123456789");
        let j = GOOD.replace("51.5", "\"0.1\"");
        assert_eq!(ok(&j).metric, dec("0.1"));
        let j = GOOD.replace("51.5", "1.5e2");
        assert_eq!(ok(&j).metric, dec("150"));
        let j = GOOD.replace("51.5", "-0.000001");
        assert_eq!(ok(&j).metric.to_string(), "-0.000001");
    }

    #[test]
    fn rejects_json_that_is_not_an_object() {
        let array = r#"["2025-04-10 08:00:00", 51.5, "pbox-1", 31.2, 121.4]"#;
        let e = err(array);
        assert_eq!(e, ParseError::NotObject { found: "an array" });
        assert_eq!(e.code(), "not_object");
        assert_eq!(err(" \"text\"").code(), "not_object");
        assert_eq!(err("42").code(), "not_object");
        assert_eq!(err("null").code(), "not_object");
        assert_eq!(err("true").code(), "not_object");
        // Broken JSON is still reported as such, whatever it starts with.
        assert_eq!(err("[1, 2").code(), "invalid_json");
        assert_eq!(err("{\"a\":").code(), "invalid_json");
    }

    #[test]
    fn a_metric_that_rounds_out_of_the_column_is_rejected() {
        // Below 1e16 as sent, 1e16 once rounded to the 8 places of DECIMAL(24,8).
        let e = err(&GOOD.replace("51.5", "9999999999999999.999999995"));
        assert_eq!(e.code(), "out_of_range");
        assert!(e.to_string().contains("metric"), "{e}");
        let e = err(&GOOD.replace("51.5", "-9999999999999999.999999995"));
        assert_eq!(e.code(), "out_of_range");
        let r = ok(&GOOD.replace("51.5", "9999999999999999.999999994"));
        assert_eq!(r.metric, dec("9999999999999999.999999994"));
    }

    #[test]
    fn the_window_is_relative_to_the_record_time() {
        let limits = ParseLimits {
            max_event_age_ms: 30 * 86_400_000,
            max_event_lead_ms: 86_400_000,
            ..ParseLimits::default()
        };
        let r = ok(GOOD); // 2025-04-10 08:00:00
        let ms = |s: &str| t(s).and_utc().timestamp_millis();
        let at = |s: &str| check_window(&r, &Zone::Utc, &limits, ms(s));
        assert!(at("2025-04-10 08:00:00").is_ok());
        assert!(at("2025-05-10 08:00:00").is_ok(), "exactly 30 days old");
        assert!(at("2025-04-09 08:00:00").is_ok(), "exactly 1 day ahead");
        let e = at("2025-05-10 08:00:00.001").unwrap_err();
        assert_eq!(e.code(), "out_of_window");
        assert!(e.to_string().contains("2025-04-10 08:00:00"), "{e}");
        assert_eq!(
            at("2025-04-09 07:59:59").unwrap_err().code(),
            "out_of_window"
        );
        // The reference is read in the configured zone: 00:30 UTC is 08:30 in Shanghai, so
        // 08:00 local is in the past there, and 7.5 h ahead in UTC.
        let sh: Zone = "Asia/Shanghai".parse().unwrap();
        let tight = ParseLimits {
            max_event_age_ms: 0,
            max_event_lead_ms: 3_600_000,
            ..limits
        };
        assert!(check_window(&r, &sh, &tight, ms("2025-04-10 00:30:00")).is_ok());
        assert!(check_window(&r, &Zone::Utc, &tight, ms("2025-04-10 00:30:00")).is_err());
        // No limits: anything goes.
        let none = ParseLimits::default();
        assert!(check_window(&r, &Zone::Utc, &none, ms("2099-01-01 00:00:00")).is_ok());
    }

    #[test]
    fn ignores_unknown_fields() {
        let j = GOOD.replace("{", r#"{"extra":[1,2,{"x":null}],"#);
        assert_eq!(ok(&j).pboxid, "pbox-1");
    }

    fn err(json: &str) -> ParseError {
        match p(json) {
            Ok(r) => panic!("{json} parsed as {r}"),
            Err(e) => e,
        }
    }

    #[test]
    fn rejects_each_missing_field_by_name() {
        for field in ["event_time", "metric", "pboxid", "latitude", "longitude"] {
            let v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
            let mut m = v.as_object().unwrap().clone();
            m.remove(field);
            let e = err(&serde_json::Value::Object(m.clone()).to_string());
            assert_eq!(e, ParseError::Missing { field: leak(field) }, "{field}");
            m.insert(field.into(), serde_json::Value::Null);
            let e = err(&serde_json::Value::Object(m).to_string());
            assert!(e.to_string().contains(field), "{e}");
            assert_eq!(e.code(), "missing_field");
        }
    }

    fn leak(s: &str) -> &'static str {
        match s {
            "event_time" => "event_time",
            "metric" => "metric",
            "pboxid" => "pboxid",
            "latitude" => "latitude",
            _ => "longitude",
        }
    }

    #[test]
    fn rejects_wrong_types() {
        let e = err(&GOOD.replace("51.5", "true"));
        assert_eq!(e.code(), "wrong_type");
        assert!(
            e.to_string()
                .contains("`metric` must be a number, found true"),
            "{e}"
        );
        let e = err(&GOOD.replace("51.5", "\"lots\""));
        assert_eq!(e.code(), "wrong_type", "{e}");
        let e = err(&GOOD.replace("\"pbox-1\"", "42"));
        assert!(e.to_string().contains("`pboxid` must be a string"), "{e}");
        let e = err(&GOOD.replace("31.2304", "[31.2]"));
        assert!(e.to_string().contains("`latitude` must be a number"), "{e}");
        let e = err(&GOOD.replace("\"2025-04-10 08:00:00\"", "1744272000"));
        assert!(
            e.to_string().contains("`event_time` must be a string"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_times() {
        for bad in [
            "2025-04-10",
            "2025-13-10 08:00:00",
            "2025-04-10 25:00:00",
            "2025-04-10T08:00:00",
            "10/04/2025 08:00:00",
            "2025-04-10 08:00:00 trailing",
            "2025-04-10T08:00:00+25:00",
        ] {
            let e = err(&GOOD.replace("2025-04-10 08:00:00", bad));
            assert_eq!(e.code(), "bad_event_time", "{bad}: {e}");
        }
        let e = err(&GOOD.replace("2025-04-10 08:00:00", "1969-12-31 23:59:59"));
        assert_eq!(e.code(), "out_of_range");
    }

    #[test]
    fn rejects_out_of_range_values() {
        for (from, to, field) in [
            ("31.2304", "90.0001", "latitude"),
            ("31.2304", "-91", "latitude"),
            ("121.4737", "180.5", "longitude"),
            ("121.4737", "-181", "longitude"),
            ("51.5", "1e17", "metric"),
            ("51.5", "123456789012345678901234567890123", "metric"),
        ] {
            let e = err(&GOOD.replace(from, to));
            assert_eq!(e.code(), "out_of_range", "{to}: {e}");
            assert!(e.to_string().contains(field), "{e}");
        }
        // The bounds themselves are valid.
        ok(&GOOD.replace("31.2304", "-90").replace("121.4737", "180"));
    }

    #[test]
    fn pboxid_rules() {
        ok(&GOOD.replace("pbox-1", &"x".repeat(64)));
        ok(&GOOD.replace("pbox-1", "设备-北京-01"));
        ok(&GOOD.replace("pbox-1", r"'; DROP TABLE iot_data; -- \\"));
        let e = err(&GOOD.replace("pbox-1", &"x".repeat(65)));
        assert!(e.to_string().contains("65 characters"), "{e}");
        let e = err(&GOOD.replace("\"pbox-1\"", "\"\""));
        assert!(e.to_string().contains("empty"), "{e}");
        let e = err(&GOOD.replace("pbox-1", "pbox\\u0007"));
        assert!(e.to_string().contains("non-printable"), "{e}");
    }

    #[test]
    fn rejects_garbage_and_oversized_payloads() {
        assert_eq!(err("").code(), "empty");
        assert_eq!(err("not json").code(), "invalid_json");
        assert_eq!(err("[1,2,3]").code(), "not_object");
        assert_eq!(err("{\"metric\":").code(), "invalid_json");
        let e = parse_reading(
            &[0xff, 0xfe, 0x00, 0x80],
            &Zone::Utc,
            &ParseLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "invalid_json");
        let big = vec![b' '; 1 << 20];
        let e = parse_reading(&big, &Zone::Utc, &ParseLimits::default()).unwrap_err();
        assert_eq!(
            e,
            ParseError::TooLarge {
                bytes: 1 << 20,
                max: 64 * 1024
            }
        );
        // Duplicate keys are ambiguous: rejected.
        assert_eq!(
            err(&GOOD.replace("{", r#"{"metric":1,"#)).code(),
            "invalid_json"
        );
    }
}
