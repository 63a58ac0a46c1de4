//! What goes on the wire besides the RowBinary rows the `clickhouse` crate encodes from
//! [`Row`](crate::Row): one insert per day, the insert deduplication token of a block, and the
//! table's DDL.

use iotflow_model::Enriched;

use crate::row::event_secs;

/// Insert blocks a modern server remembers per table for deduplication (tables the sink
/// creates on 22.2 and later).
pub const DEDUP_WINDOW: u32 = 1000;

/// The DDL of `iot_data`, applied at start when `clickhouse.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/clickhouse/iot_data.sql");

/// The `CREATE TABLE` statement for `table`: [`IOT_DATA_DDL`] without its comments (the crate
/// reads `?` as a bind placeholder, and comments have some), with a deduplication window of
/// [`DEDUP_WINDOW`] blocks when the server knows the setting (`dedup_tokens`).
pub fn create_table_ddl(table: &str, dedup_tokens: bool) -> String {
    let ddl: String = IOT_DATA_DDL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("EXISTS iot_data (", &format!("EXISTS `{table}` ("));
    if dedup_tokens {
        // Plain MergeTree tables deduplicate inserts only with a window of remembered
        // blocks; 18.16 does not know the setting.
        format!(
            "{}\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}",
            ddl.trim_end().trim_end_matches(';')
        )
    } else {
        ddl
    }
}

/// The insert deduplication token of a batch: a digest (64-bit FNV-1a, stable across builds)
/// of the source coordinates and event times of its rows, in order. The operator retries a
/// failed batch with exactly the same rows, so a retry carries the same token and a server
/// that already stored the first attempt (the answer was lost) drops the second.
pub fn dedup_token<'a, I>(rows: I) -> String
where
    I: IntoIterator<Item = &'a Enriched>,
    I::IntoIter: ExactSizeIterator,
{
    let rows = rows.into_iter();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let n = rows.len();
    feed(&(n as u64).to_le_bytes());
    for e in rows {
        let r = &e.reading;
        let ms = r.event_time.and_utc().timestamp_subsec_millis() as u16;
        feed(&r.source.partition.to_le_bytes());
        feed(&r.source.offset.to_le_bytes());
        feed(&event_secs(e).to_le_bytes());
        feed(&ms.to_le_bytes());
    }
    format!("iotflow-{n}-{h:016x}")
}

/// The indices of a batch's rows grouped by day (the table's partition,
/// `toYYYYMMDD(event_time)`), in their order within each day. One insert per day: a modern
/// server refuses an insert block that touches more than `max_partitions_per_insert_block`
/// (100) partitions with Code 252, and a block of one partition is what it writes best anyway.
pub fn by_day(rows: &[Enriched]) -> Vec<Vec<usize>> {
    let mut days: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, e) in rows.iter().enumerate() {
        days.entry(event_secs(e) / 86_400).or_default().push(i);
    }
    days.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{Decimal, NaiveDateTime, Reading, SourceRef};

    /// 2025-04-11 00:00:00.125 (read as UTC) plus `secs`.
    fn at(secs: u32) -> NaiveDateTime {
        NaiveDateTime::parse_from_str("2025-04-11 00:00:00.125", "%Y-%m-%d %H:%M:%S%.f").unwrap()
            + std::time::Duration::from_secs(u64::from(secs))
    }

    fn row(partition: i32, offset: i64) -> Enriched {
        Enriched {
            reading: Reading {
                event_time: at(0),
                metric: Decimal::ONE,
                pboxid: "p".into(),
                latitude: Decimal::TWO,
                longitude: Decimal::from(3),
                source: SourceRef { partition, offset },
                kafka_ts_ms: None,
            },
            device: None,
        }
    }

    #[test]
    fn a_batch_is_inserted_one_day_at_a_time_in_order() {
        // 150 days in one batch: a modern server refuses a block of more than 100 partitions
        // (Code 252); one insert per day never comes near it.
        let mut rows = Vec::new();
        for i in 0..300i64 {
            let mut r = row(0, i);
            r.reading.event_time = at(((i % 150) as u32) * 86_400 + (i as u32 % 7) * 3600);
            rows.push(r);
        }
        let days: Vec<Vec<&Enriched>> = by_day(&rows)
            .into_iter()
            .map(|day| day.into_iter().map(|i| &rows[i]).collect())
            .collect();
        assert_eq!(days.len(), 150);
        for day in &days {
            assert_eq!(day.len(), 2);
            let d = event_secs(day[0]) / 86_400;
            assert!(
                day.iter().all(|r| event_secs(r) / 86_400 == d),
                "one partition per insert"
            );
            assert!(
                day[0].reading.source.offset < day[1].reading.source.offset,
                "batch order kept within a day"
            );
        }
        assert_eq!(days.iter().map(Vec::len).sum::<usize>(), rows.len());
    }

    #[test]
    fn dedup_tokens_are_the_batch_content() {
        let a = vec![row(0, 1), row(0, 2), row(1, 7)];
        assert_eq!(
            dedup_token(&a),
            dedup_token(&a.clone()),
            "a retry repeats its token"
        );
        assert_eq!(
            dedup_token(&a),
            "iotflow-3-".to_string() + &dedup_token(&a)[10..]
        );
        let mut b = a.clone();
        b[2].reading.source.offset = 8;
        assert_ne!(dedup_token(&a), dedup_token(&b));
        assert_ne!(dedup_token(&a), dedup_token(&a[..2]));
        let mut c = a.clone();
        c.swap(0, 1);
        assert_ne!(
            dedup_token(&a),
            dedup_token(&c),
            "order matters (blocks are compared whole)"
        );
    }

    #[test]
    fn the_ddl_names_the_table_and_keeps_no_comments() {
        let old = create_table_ddl("t1", false);
        assert!(old.contains("EXISTS `t1` ("), "{old}");
        assert!(!old.contains("--") && !old.contains("deduplication_window"));
        let new = create_table_ddl("t1", true);
        assert!(new.ends_with(&format!(
            "SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
        )));
    }
}
