//! Serde adapters that bincode 1.x can read back exactly.
//!
//! `rust_decimal`'s own serde impl goes through `deserialize_any`, which works between threads
//! and panics between processes; chrono's goes through text. These adapters keep the exact
//! binary form instead.

/// `Decimal` as its 16-byte representation.
pub mod decimal {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `d` as 16 raw bytes.
    pub fn serialize<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        d.serialize().serialize(s)
    }

    /// Reads 16 raw bytes back into a `Decimal`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        <[u8; 16]>::deserialize(d).map(Decimal::deserialize)
    }
}

/// `Option<Decimal>` as optional 16 raw bytes.
pub mod opt_decimal {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `d` as optional 16 raw bytes.
    pub fn serialize<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.serialize()).serialize(s)
    }

    /// Reads optional 16 raw bytes back into an `Option<Decimal>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Ok(<Option<[u8; 16]>>::deserialize(d)?.map(Decimal::deserialize))
    }
}

/// `NaiveDateTime` as microseconds since 1970-01-01 00:00:00 (no zone implied).
pub mod naive_micros {
    use chrono::{DateTime, NaiveDateTime};
    use serde::{de::Error, Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes `t` as microseconds.
    pub fn serialize<S: Serializer>(t: &NaiveDateTime, s: S) -> Result<S::Ok, S::Error> {
        t.and_utc().timestamp_micros().serialize(s)
    }

    /// Reads microseconds back into a `NaiveDateTime`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDateTime, D::Error> {
        let micros = i64::deserialize(d)?;
        DateTime::from_timestamp_micros(micros)
            .map(|t| t.naive_utc())
            .ok_or_else(|| D::Error::custom(format!("timestamp {micros} us out of range")))
    }
}
