//! The fast path of [`super::parse_reading`]: one pass over the bytes, for the shape devices
//! actually send.
//!
//! Why a second parser: serde's generic machinery, `RawValue` and `Decimal` via its text cost
//! about 2.6× a plain `f64` parse (docs/benchmarks.md). This scanner reads the five fields in
//! any order, skips unknown fields with flat values, builds each `Decimal` from its digits and
//! each time from its digits, and allocates only the `pboxid` string.
//!
//! Why the semantics cannot drift: the fast path never produces an error. It returns `Some`
//! only for input that it has checked, byte by byte, to be something the reference parser
//! ([`super::parse_reading_reference`]) accepts with the same value; for anything else (any
//! escape, a duplicate key, an exponent, a numeric string, nested values, `null`, a value out
//! of range, a leap second, an unusual time spelling, bad UTF-8, ...) it returns `None` and the
//! reference parser decides, error message included. `tests/parse_differential.rs` checks the
//! two against each other on generated and hand-made inputs.

use chrono::{Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use rust_decimal::Decimal;

use super::{check_pboxid, ParseLimits, ParsedReading};
use crate::{columns, Zone};

/// Most significant digits a fast-path number may have: 19 digits always fit a `u64`.
const MAX_DIGITS: u32 = 19;

/// The reading, if `payload` has the common shape and is valid; `None` means "ask the
/// reference parser", never "invalid".
pub(super) fn parse(payload: &[u8], zone: &Zone, limits: &ParseLimits) -> Option<ParsedReading> {
    if payload.len() > limits.max_message_bytes {
        return None;
    }
    let fields = Scanner { b: payload, i: 0 }.object()?;
    let event_time = event_time(fields.event_time?, zone)?;
    let year = event_time.year();
    if year < limits.min_year || year > limits.max_year {
        return None;
    }
    let metric = fields.metric?;
    let metric_fits = if metric.frac_digits <= columns::DECIMAL_SCALE {
        // No rounding to the column scale: fits iff the integer part has at most 16 digits.
        metric.int_digits <= columns::METRIC_INT_DIGITS
    } else {
        columns::fits_decimal(metric.decimal(), columns::METRIC_INT_DIGITS)
    };
    let latitude = fields.latitude?;
    let longitude = fields.longitude?;
    if !metric_fits || !latitude.within(90) || !longitude.within(180) {
        return None;
    }
    let pboxid = fields.pboxid?;
    check_pboxid(pboxid).ok()?;
    Some(ParsedReading {
        event_time,
        metric: metric.decimal(),
        pboxid: pboxid.to_owned(),
        latitude: latitude.decimal(),
        longitude: longitude.decimal(),
    })
}

/// The known fields as found: strings borrowed, numbers as digits.
#[derive(Default)]
struct Fields<'a> {
    event_time: Option<&'a [u8]>,
    metric: Option<Number>,
    pboxid: Option<&'a str>,
    latitude: Option<Number>,
    longitude: Option<Number>,
}

/// A JSON number `-?(0|[1-9][0-9]*)(\.[0-9]+)?` of at most [`MAX_DIGITS`] digits.
#[derive(Clone, Copy)]
struct Number {
    negative: bool,
    /// All digits, integer and fraction, as one integer.
    mantissa: u64,
    /// Digits after the point: the decimal's scale.
    frac_digits: u32,
    /// Digits before the point (`0.5` has one).
    int_digits: u32,
    /// The integer part's value.
    int_value: u64,
}

impl Number {
    /// The same `Decimal` as `Decimal::from_str_exact` of the text: same mantissa, same scale
    /// (trailing zeros kept). Negative zero never gets here (see [`Scanner::number`]).
    fn decimal(self) -> Decimal {
        Decimal::from_parts(
            self.mantissa as u32,
            (self.mantissa >> 32) as u32,
            0,
            self.negative,
            self.frac_digits,
        )
    }

    /// Whether the value lies in `[-bound, bound]`.
    fn within(self, bound: u64) -> bool {
        let frac_is_zero = self.mantissa == self.int_value * 10u64.pow(self.frac_digits);
        self.int_value < bound || (self.int_value == bound && frac_is_zero)
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    /// Skips JSON whitespace (exactly serde_json's four bytes, not `is_ascii_whitespace`).
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    /// The whole payload as one flat object with each known field once, then nothing but
    /// whitespace.
    fn object(mut self) -> Option<Fields<'a>> {
        let mut f = Fields::default();
        self.ws();
        if self.next()? != b'{' {
            return None;
        }
        loop {
            self.ws();
            let (key, key_ascii) = self.raw_string()?;
            self.ws();
            if self.next()? != b':' {
                return None;
            }
            self.ws();
            match key {
                b"event_time" => set(&mut f.event_time, self.raw_string()?.0)?,
                b"metric" => set(&mut f.metric, self.number()?)?,
                b"pboxid" => set(&mut f.pboxid, self.string()?)?,
                b"latitude" => set(&mut f.latitude, self.number()?)?,
                b"longitude" => set(&mut f.longitude, self.number()?)?,
                _ => {
                    if !key_ascii {
                        std::str::from_utf8(key).ok()?;
                    }
                    self.skip_value()?
                }
            }
            self.ws();
            match self.next()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        self.ws();
        (self.i == self.b.len()).then_some(f)
    }

    /// The bytes of a string with no escapes and no control characters at the cursor, and
    /// whether they are all ASCII. Not checked as UTF-8: the callers that keep the text check
    /// it ([`Scanner::string`]); keys and times are compared byte by byte, and any byte outside
    /// ASCII fails those comparisons. Checking every string was a sixth of the fast path.
    fn raw_string(&mut self) -> Option<(&'a [u8], bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i + 1;
        let mut ascii = true;
        let len = self.b[start..].iter().position(|&c| {
            ascii &= c.is_ascii();
            c == b'"' || c == b'\\' || c < 0x20
        })?;
        let end = start + len;
        if self.b[end] != b'"' {
            return None;
        }
        self.i = end + 1;
        Some((&self.b[start..end], ascii))
    }

    /// A string with no escapes and no control characters, valid UTF-8, at the cursor.
    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.raw_string()?.0).ok()
    }

    /// Skips a string as [`Scanner::string`] reads it, checking UTF-8 only when a byte is
    /// outside ASCII.
    fn skip_string(&mut self) -> Option<()> {
        let (bytes, ascii) = self.raw_string()?;
        if !ascii {
            std::str::from_utf8(bytes).ok()?;
        }
        Some(())
    }

    /// A number of the [`Number`] shape at the cursor; `None` for an exponent, too many
    /// digits, negative zero or anything that is not a JSON number. The byte after it is
    /// checked by the caller (`,` `}` or whitespace), so `1.5e3` and `01` end here as `None`.
    fn number(&mut self) -> Option<Number> {
        let negative = self.peek()? == b'-';
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        let mut mantissa = 0u64;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            if self.i - int_start == MAX_DIGITS as usize {
                return None;
            }
            mantissa = mantissa * 10 + u64::from(d - b'0');
            self.i += 1;
        }
        let int_digits = (self.i - int_start) as u32;
        if int_digits == 0 || (int_digits > 1 && self.b[int_start] == b'0') {
            return None;
        }
        let int_value = mantissa;
        let mut frac_digits = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            while let Some(d @ b'0'..=b'9') = self.peek() {
                frac_digits += 1;
                if int_digits + frac_digits > MAX_DIGITS {
                    return None;
                }
                mantissa = mantissa * 10 + u64::from(d - b'0');
                self.i += 1;
            }
            if frac_digits == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) || (negative && mantissa == 0) {
            return None;
        }
        Some(Number {
            negative,
            mantissa,
            frac_digits,
            int_digits,
            int_value,
        })
    }

    /// Skips the value of an unknown field: a string, a number, `true`, `false` or `null`.
    /// Arrays and objects are left to the reference parser.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.skip_number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    /// Any JSON number, exponent included: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn skip_number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let first = self.next()?;
        if !first.is_ascii_digit() {
            return None;
        }
        if first == b'0' && self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return None;
        }
        self.digits(0);
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits(1)?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits(1)?;
        }
        Some(())
    }

    /// Skips a run of digits; `None` if it is shorter than `min`.
    fn digits(&mut self, min: usize) -> Option<()> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i - start >= min).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        if !rest.starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(())
    }
}

/// Stores a field's value; `None` if the key came before (the reference rejects duplicates).
fn set<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// `yyyy-MM-dd HH:mm:ss[.f{1,9}]` as given, or `yyyy-MM-ddTHH:mm:ss[.f{1,9}]` followed by `Z`
/// or `±HH:MM`, converted to `zone` as the reference does (through `Zone::local`). Leap
/// seconds, lower-case `t`/`z`, more than 9 fraction digits and other spellings chrono accepts
/// are left to the reference.
fn event_time(b: &[u8], zone: &Zone) -> Option<NaiveDateTime> {
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[13] != b':'
        || b[16] != b':'
        || !(b[10] == b' ' || b[10] == b'T')
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let year = num(0..4)? as i32;
    let (month, day) = (num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = num(start..i)? * 10u32.pow(9 - n as u32);
    }
    if second > 59 {
        return None;
    }
    let naive = NaiveDateTime::new(
        NaiveDate::from_ymd_opt(year, month, day)?,
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?,
    );
    let offset_secs = match (b[10], &b[i..]) {
        (b' ', []) => return Some(naive),
        (b'T', [b'Z']) => 0,
        (b'T', [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let digit = |c: &u8| c.is_ascii_digit().then(|| i32::from(c - b'0'));
            let hours = digit(h1)? * 10 + digit(h2)?;
            let minutes = digit(m1)? * 10 + digit(m2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let at = FixedOffset::east_opt(offset_secs)?
        .from_local_datetime(&naive)
        .single()?;
    Some(zone.local(&at))
}
