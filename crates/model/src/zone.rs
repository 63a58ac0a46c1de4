use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, NaiveDateTime, Offset, TimeZone};

/// The time zone that RFC 3339 event times are converted into before they are stored.
///
/// Readings in `yyyy-MM-dd HH:mm:ss[.fff]` form carry no zone and are stored as given; readings
/// with an offset are converted to this zone's local wall time, so one table never mixes zones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Zone {
    /// Coordinated Universal Time (the default).
    #[default]
    Utc,
    /// A fixed offset such as `+08:00`.
    Fixed(FixedOffset),
    /// An IANA zone such as `Asia/Shanghai`, daylight saving included.
    Named(chrono_tz::Tz),
}

/// A time zone name that is neither `UTC`, a `±HH:MM` offset, nor an IANA zone name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown time zone `{0}`: use UTC, an offset like +08:00, or an IANA name like Asia/Shanghai"
)]
pub struct ZoneError(pub String);

impl Zone {
    /// Local wall time of `t` in this zone.
    pub fn local(&self, t: &DateTime<FixedOffset>) -> NaiveDateTime {
        match self {
            Zone::Utc => t.naive_utc(),
            Zone::Fixed(off) => t.with_timezone(off).naive_local(),
            Zone::Named(tz) => t.with_timezone(tz).naive_local(),
        }
    }

    /// The offset of this zone from UTC at the UTC instant `utc`.
    pub fn offset_at(&self, utc: &NaiveDateTime) -> FixedOffset {
        match self {
            Zone::Utc => FixedOffset::east_opt(0).expect("zero offset"),
            Zone::Fixed(off) => *off,
            Zone::Named(tz) => tz.offset_from_utc_datetime(utc).fix(),
        }
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(Zone::Utc);
        }
        if t.starts_with('+') || t.starts_with('-') {
            let (sign, rest) = t.split_at(1);
            let mut parts = rest.splitn(2, ':');
            let h: i32 = parts
                .next()
                .and_then(|h| h.parse().ok())
                .ok_or_else(|| ZoneError(s.into()))?;
            let m: i32 = match parts.next() {
                Some(m) => m.parse().map_err(|_| ZoneError(s.into()))?,
                None => 0,
            };
            let secs = (h * 3600 + m * 60) * if sign == "-" { -1 } else { 1 };
            return FixedOffset::east_opt(secs)
                .map(Zone::Fixed)
                .ok_or_else(|| ZoneError(s.into()));
        }
        t.parse::<chrono_tz::Tz>()
            .map(Zone::Named)
            .map_err(|_| ZoneError(s.into()))
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Utc => f.write_str("UTC"),
            Zone::Fixed(off) => write!(f, "{off}"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("UTC".parse::<Zone>().unwrap(), Zone::Utc);
        assert_eq!(
            "+08:00".parse::<Zone>().unwrap(),
            Zone::Fixed(FixedOffset::east_opt(8 * 3600).unwrap())
        );
        assert_eq!(
            "-05:30".parse::<Zone>().unwrap(),
            Zone::Fixed(FixedOffset::east_opt(-(5 * 3600 + 30 * 60)).unwrap())
        );
        assert_eq!(
            "Asia/Shanghai".parse::<Zone>().unwrap().to_string(),
            "Asia/Shanghai"
        );
        let err = "Mars/Olympus".parse::<Zone>().unwrap_err();
        assert!(err.to_string().contains("Mars/Olympus"));
        assert!("+99:00".parse::<Zone>().is_err());
    }
}
