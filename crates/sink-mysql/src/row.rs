//! The row the MySQL sink stores: the shared [`FlatRow`], its texts cut to the column widths.
//!
//! `iot_data` keeps exactly the shared row's 15 columns (`schemas/mysql/iot_data.sql`), so the
//! MySQL row *is* [`FlatRow`]: decimals stay exact until the encoder writes them, the wall time
//! is the configured zone's, and a refused row's dead letter is [`FlatRow::rejected`].

use iotflow_model::Enriched;
use iotflow_sink::FlatRow;

/// One row of the `iot_data` table, as the sink writes it (field order is the column order of
/// [`crate::encoder::COLUMNS`]).
pub type Row = FlatRow;

/// The row stored for one enriched reading: the shared row with its text columns cut to their
/// `VARCHAR` widths (a business record with a longer name still stores its reading).
pub fn row(enriched: &Enriched) -> Row {
    FlatRow::from(enriched).with_texts_cut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::columns::{STATUS_MAX_CHARS, TEXT_MAX_CHARS};
    use iotflow_model::{Decimal, DeviceInfo, NaiveDateTime, Reading, SourceRef};

    #[test]
    fn texts_are_cut_to_their_columns_and_the_rest_is_kept() {
        let enriched = Enriched {
            reading: Reading {
                event_time: NaiveDateTime::parse_from_str(
                    "2025-04-10 08:00:00.005",
                    "%Y-%m-%d %H:%M:%S%.f",
                )
                .unwrap(),
                metric: Decimal::new(125, 1),
                pboxid: "pbox-1".into(),
                latitude: Decimal::new(3_123, 2),
                longitude: Decimal::new(12_147, 2),
                source: SourceRef {
                    partition: 2,
                    offset: 7,
                },
                kafka_ts_ms: Some(5),
            },
            device: Some(
                DeviceInfo {
                    pboxid: "pbox-1".into(),
                    company: Some("c".repeat(TEXT_MAX_CHARS + 10)),
                    status: Some("s".repeat(STATUS_MAX_CHARS + 1)),
                    line: Some("L1".into()),
                    ..Default::default()
                }
                .into(),
            ),
        };
        let r = row(&enriched);
        assert_eq!(r.company.as_deref().map(str::len), Some(TEXT_MAX_CHARS));
        assert_eq!(
            r.device_status.as_deref().map(str::len),
            Some(STATUS_MAX_CHARS)
        );
        assert_eq!(r.line.as_deref(), Some("L1"));
        assert_eq!(
            (r.src_partition, r.src_offset, r.kafka_ts_ms),
            (2, 7, Some(5))
        );
        assert_eq!(r.pboxid, "pbox-1");
    }
}
