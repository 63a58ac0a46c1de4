//! The plan: which `ALTER TABLE` gives a day its own partition in a given layout. Pure
//! functions over [`PartitionBound`] slices, no I/O (see the module docs of
//! [`crate::partitions`] for the rules).

use std::collections::BTreeSet;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use iotflow_mysql::quote_identifier;

/// First day that can have a partition: `DATETIME` starts at year 1000.
pub const FIRST_PARTITIONABLE_DAY: NaiveDate = match NaiveDate::from_ymd_opt(1000, 1, 1) {
    Some(day) => day,
    None => panic!("valid date"),
};

/// Last day that can have a partition: its upper bound, the next midnight, must still be a
/// `DATETIME` (which ends at year 9999).
pub const LAST_PARTITIONABLE_DAY: NaiveDate = match NaiveDate::from_ymd_opt(9999, 12, 30) {
    Some(day) => day,
    None => panic!("valid date"),
};

/// Upper bound of a range partition: its `VALUES LESS THAN (...)`.
///
/// Ordered so that every datetime bound sorts before `MAXVALUE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpperBound {
    /// `VALUES LESS THAN ('...')`: the partition holds rows strictly before this time.
    Before(NaiveDateTime),
    /// `VALUES LESS THAN (MAXVALUE)`: the partition is unbounded above.
    MaxValue,
}

impl UpperBound {
    /// Parse `information_schema.PARTITIONS.PARTITION_DESCRIPTION` of a `RANGE COLUMNS` partition
    /// on a `DATETIME` column: `MAXVALUE` or a quoted literal as the table was created with, such
    /// as `'2025-04-11'`, `'2025-04-11 00:00:00'` or `'2025-04-11 00:00:00.000'`.
    pub fn parse(description: &str) -> Option<Self> {
        let description = description.trim();
        if description.eq_ignore_ascii_case("MAXVALUE") {
            return Some(Self::MaxValue);
        }
        let literal = description.strip_prefix('\'')?.strip_suffix('\'')?;
        if let Ok(at) = NaiveDateTime::parse_from_str(literal, "%Y-%m-%d %H:%M:%S%.f") {
            return Some(Self::Before(at));
        }
        if let Ok(day) = NaiveDate::parse_from_str(literal, "%Y-%m-%d") {
            return Some(Self::Before(day.and_time(NaiveTime::MIN)));
        }
        None
    }

    /// Append the bound as it goes inside `VALUES LESS THAN (...)`.
    fn push_sql(&self, out: &mut String) {
        match self {
            Self::MaxValue => out.push_str("MAXVALUE"),
            Self::Before(at) => {
                out.push('\'');
                out.push_str(&at.format("%Y-%m-%d %H:%M:%S%.f").to_string());
                out.push('\'');
            }
        }
    }
}

/// One partition of the table: its name and upper bound. A layout is a slice of these in
/// partition order, with strictly increasing bounds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionBound {
    /// Partition name, e.g. `p20250410`.
    pub name: String,
    /// Its `VALUES LESS THAN`.
    pub less_than: UpperBound,
}

impl PartitionBound {
    /// A partition called `name` holding rows before `less_than`.
    pub fn new(name: impl Into<String>, less_than: UpperBound) -> Self {
        Self {
            name: name.into(),
            less_than,
        }
    }
}

/// One `ALTER TABLE` that gives a day its own partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorganize {
    /// The consecutive existing partitions that are replaced. Empty when the table has no
    /// `MAXVALUE` partition and the day lies past its last bound: the new partitions are then
    /// appended with `ADD PARTITION`.
    pub from: Vec<String>,
    /// The partitions that replace them (or are appended), in order. They cover exactly the
    /// range of `from`, except that the last partition of the table may be extended.
    pub into: Vec<PartitionBound>,
}

impl Reorganize {
    /// The `ALTER TABLE` statement for `table` (a plain table name, quoted here).
    pub fn to_sql(&self, table: &str) -> String {
        let mut sql = String::with_capacity(128 + 64 * self.into.len());
        sql.push_str("ALTER TABLE ");
        quote_identifier(table, &mut sql);
        if self.from.is_empty() {
            sql.push_str(" ADD PARTITION (");
        } else {
            sql.push_str(" REORGANIZE PARTITION ");
            for (i, name) in self.from.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                quote_identifier(name, &mut sql);
            }
            sql.push_str(" INTO (");
        }
        for (i, piece) in self.into.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str("PARTITION ");
            quote_identifier(&piece.name, &mut sql);
            sql.push_str(" VALUES LESS THAN (");
            piece.less_than.push_sql(&mut sql);
            sql.push(')');
        }
        sql.push(')');
        sql
    }
}

fn midnight(day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::MIN)
}

/// Lower bound of partition `i` of a layout (`None`: unbounded below).
fn lower_bound(layout: &[PartitionBound], i: usize) -> Option<NaiveDateTime> {
    match i.checked_sub(1).map(|prev| layout[prev].less_than) {
        None => None,
        Some(UpperBound::Before(at)) => Some(at),
        // Only the last partition may be MAXVALUE, so nothing follows it in a valid layout.
        Some(UpperBound::MaxValue) => Some(NaiveDateTime::MAX),
    }
}

/// The day whose exact range `[lower, upper)` is, if it is exactly one day.
fn exact_day(lower: Option<NaiveDateTime>, upper: UpperBound) -> Option<NaiveDate> {
    let lower = lower?;
    let UpperBound::Before(upper) = upper else {
        return None;
    };
    let day = lower.date();
    (lower == midnight(day) && Some(upper) == day.succ_opt().map(midnight)).then_some(day)
}

/// The days that already have their own partition in `layout`.
pub fn exact_days(layout: &[PartitionBound]) -> BTreeSet<NaiveDate> {
    (0..layout.len())
        .filter_map(|i| exact_day(lower_bound(layout, i), layout[i].less_than))
        .collect()
}

/// Check that `layout` is something [`plan`] can work on: at least one partition, strictly
/// increasing bounds, `MAXVALUE` only last, and unique names (case-insensitively, as the server
/// compares them).
pub fn validate_layout(layout: &[PartitionBound]) -> Result<(), String> {
    if layout.is_empty() {
        return Err("the table has no partitions".into());
    }
    for pair in layout.windows(2) {
        if pair[0].less_than >= pair[1].less_than {
            return Err(format!(
                "partition bounds are not increasing: {} then {}",
                pair[0].name, pair[1].name
            ));
        }
    }
    let mut names = BTreeSet::new();
    for partition in layout {
        if !names.insert(partition.name.to_ascii_lowercase()) {
            return Err(format!("duplicate partition name {}", partition.name));
        }
    }
    Ok(())
}

/// Name for a new partition covering `[lower, upper)` (see the module docs).
fn piece_name(lower: Option<NaiveDateTime>, upper: UpperBound) -> String {
    match (lower, upper) {
        (None, _) => "pmin".to_owned(),
        (Some(_), UpperBound::MaxValue) => "pmax".to_owned(),
        (Some(lower), upper) => match exact_day(Some(lower), upper) {
            Some(day) => format!("p{}", day.format("%Y%m%d")),
            None => format!("pgap{}", lower.date().format("%Y%m%d")),
        },
    }
}

/// `base`, or `base_2`, `base_3`, ... if taken; records the result as taken.
fn unique_name(base: String, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name.to_ascii_lowercase()) {
        name = format!("{base}_{n}");
        n += 1;
    }
    taken.insert(name.to_ascii_lowercase());
    name
}

/// Plan the `ALTER TABLE` that gives `day` its own partition `[day, day + 1)` in `existing`, or
/// `None` if it already has one.
///
/// `existing` is the table's layout in partition order, as [`read_partitions`](super::read_partitions) returns it (see
/// [`validate_layout`]). An empty layout, or a `day` past [`LAST_PARTITIONABLE_DAY`], yields
/// `None`: there is nothing this function can plan (the manager reports both as errors).
///
/// ```
/// use chrono::NaiveDate;
/// use iotflow_sink_mysql::partitions::{plan, PartitionBound, UpperBound};
///
/// let layout = [PartitionBound::new("pmax", UpperBound::MaxValue)];
/// let day = NaiveDate::from_ymd_opt(2025, 4, 10).unwrap();
/// let change = plan(&layout, day).unwrap();
/// assert_eq!(
///     change.to_sql("iot_data"),
///     "ALTER TABLE `iot_data` REORGANIZE PARTITION `pmax` INTO (\
///      PARTITION `pmin` VALUES LESS THAN ('2025-04-10 00:00:00'), \
///      PARTITION `p20250410` VALUES LESS THAN ('2025-04-11 00:00:00'), \
///      PARTITION `pmax` VALUES LESS THAN (MAXVALUE))"
/// );
/// ```
pub fn plan(existing: &[PartitionBound], day: NaiveDate) -> Option<Reorganize> {
    let start = midnight(day);
    let end = midnight(day.succ_opt()?);
    let last = existing.len().checked_sub(1)?;

    // Partitions whose range [lower, upper) overlaps [start, end): consecutive, since bounds
    // increase.
    let overlapping: Vec<usize> = (0..existing.len())
        .filter(|&i| {
            lower_bound(existing, i).is_none_or(|lower| lower < end)
                && existing[i].less_than > UpperBound::Before(start)
        })
        .collect();

    if let [only] = overlapping[..] {
        if exact_day(lower_bound(existing, only), existing[only].less_than) == Some(day) {
            return None;
        }
    }

    let (from, lower, upper) = match (overlapping.first(), overlapping.last()) {
        (Some(&first), Some(&last_overlapping)) => {
            let mut upper = existing[last_overlapping].less_than;
            // Only the last partition can end before the day ends (nothing follows it); a
            // REORGANIZE may extend the last partition's range.
            if last_overlapping == last && upper < UpperBound::Before(end) {
                upper = UpperBound::Before(end);
            }
            let from: Vec<String> = existing[first..=last_overlapping]
                .iter()
                .map(|p| p.name.clone())
                .collect();
            (from, lower_bound(existing, first), upper)
        }
        // The day lies at or past the last bound (so that bound is a datetime): append.
        _ => {
            let UpperBound::Before(table_end) = existing[last].less_than else {
                return None;
            };
            (Vec::new(), Some(table_end), UpperBound::Before(end))
        }
    };

    let mut taken: BTreeSet<String> = existing
        .iter()
        .filter(|p| !from.contains(&p.name))
        .map(|p| p.name.to_ascii_lowercase())
        .collect();
    let mut into = Vec::with_capacity(3);
    let mut push = |lower: Option<NaiveDateTime>, upper: UpperBound| {
        let name = unique_name(piece_name(lower, upper), &mut taken);
        into.push(PartitionBound::new(name, upper));
    };
    if lower.is_none_or(|lower| lower < start) {
        push(lower, UpperBound::Before(start));
    }
    push(Some(start), UpperBound::Before(end));
    if UpperBound::Before(end) < upper {
        push(Some(end), upper);
    }
    Some(Reorganize { from, into })
}

/// The layout after `change` has been applied to `existing`.
pub fn apply(existing: &[PartitionBound], change: &Reorganize) -> Vec<PartitionBound> {
    let mut layout = existing.to_vec();
    match change.from.first() {
        None => layout.extend(change.into.iter().cloned()),
        Some(first) => {
            let at = layout
                .iter()
                .position(|p| &p.name == first)
                .unwrap_or(layout.len());
            let end = (at + change.from.len()).min(layout.len());
            layout.splice(at..end, change.into.iter().cloned());
        }
    }
    layout
}

/// Plan the changes for several days, one `ALTER TABLE` per day that needs one, each planned on
/// the layout the previous ones leave.
pub fn plan_all(
    existing: &[PartitionBound],
    days: impl IntoIterator<Item = NaiveDate>,
) -> Vec<Reorganize> {
    let mut layout = existing.to_vec();
    let mut changes = Vec::new();
    for day in days {
        if let Some(change) = plan(&layout, day) {
            layout = apply(&layout, &change);
            changes.push(change);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn before(y: i32, m: u32, d: u32) -> UpperBound {
        UpperBound::Before(midnight(day(y, m, d)))
    }

    fn p(name: &str, less_than: UpperBound) -> PartitionBound {
        PartitionBound::new(name, less_than)
    }

    /// The layout from the article: consecutive days, then pmax.
    fn article() -> Vec<PartitionBound> {
        vec![
            p("p20250410", before(2025, 4, 11)),
            p("p20250411", before(2025, 4, 12)),
            p("p20250412", before(2025, 4, 13)),
            p("pmax", UpperBound::MaxValue),
        ]
    }

    fn names(pieces: &[PartitionBound]) -> Vec<&str> {
        pieces.iter().map(|p| p.name.as_str()).collect()
    }

    /// Apply the plan for `d` and check the day then has its own partition named `pYYYYMMDD`,
    /// the layout stays valid and planning again is a no-op.
    fn apply_and_check(layout: &[PartitionBound], d: NaiveDate) -> Vec<PartitionBound> {
        let change = plan(layout, d).expect("a change");
        let after = apply(layout, &change);
        validate_layout(&after).unwrap();
        assert!(exact_days(&after).contains(&d));
        assert!(plan(&after, d).is_none());
        after
    }

    #[test]
    fn only_pmax_splits_into_pmin_day_pmax() {
        let layout = [p("pmax", UpperBound::MaxValue)];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        apply_and_check(&layout, day(2025, 4, 10));
    }

    #[test]
    fn article_layout_days_are_present_except_the_unbounded_first_one() {
        let layout = article();
        assert_eq!(plan(&layout, day(2025, 4, 11)), None);
        assert_eq!(plan(&layout, day(2025, 4, 12)), None);
        assert_eq!(
            exact_days(&layout),
            [day(2025, 4, 11), day(2025, 4, 12)].into()
        );
        // p20250410 really covers everything before 04-11: it must lose its open lower end.
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["p20250410"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11))
            ]
        );
        apply_and_check(&layout, day(2025, 4, 10));
    }

    #[test]
    fn day_right_after_the_last_day_partition_is_cut_from_pmax() {
        let layout = article();
        let change = plan(&layout, day(2025, 4, 13)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("p20250413", before(2025, 4, 14)),
                p("pmax", UpperBound::MaxValue)
            ]
        );
        assert_eq!(
            change.to_sql("iot_data"),
            "ALTER TABLE `iot_data` REORGANIZE PARTITION `pmax` INTO (\
             PARTITION `p20250413` VALUES LESS THAN ('2025-04-14 00:00:00'), \
             PARTITION `pmax` VALUES LESS THAN (MAXVALUE))"
        );
        apply_and_check(&layout, day(2025, 4, 13));
    }

    #[test]
    fn day_far_after_the_last_day_partition_leaves_a_gap_before_it() {
        let layout = article();
        let change = plan(&layout, day(2025, 5, 1)).unwrap();
        assert_eq!(change.from, ["pmax"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250413", before(2025, 5, 1)),
                p("p20250501", before(2025, 5, 2)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        apply_and_check(&layout, day(2025, 5, 1));
    }

    #[test]
    fn day_before_the_first_partition_splits_the_first_partition() {
        let layout = article();
        let change = plan(&layout, day(2025, 4, 1)).unwrap();
        assert_eq!(change.from, ["p20250410"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 1)),
                p("p20250401", before(2025, 4, 2)),
                p("pgap20250402", before(2025, 4, 11)),
            ]
        );
        // [04-02, 04-11) is not one day, so it is a gap (04-10 gets its own when needed).
        let after = apply_and_check(&layout, day(2025, 4, 1));
        let after = apply_and_check(&after, day(2025, 4, 10));
        assert_eq!(
            names(&after),
            [
                "pmin",
                "p20250401",
                "pgap20250402",
                "p20250410",
                "p20250411",
                "p20250412",
                "pmax"
            ]
        );
    }

    #[test]
    fn day_the_day_before_the_first_partition() {
        let layout = [
            p("p20250410", before(2025, 4, 11)),
            p("pmax", UpperBound::MaxValue),
        ];
        let after = apply_and_check(&layout, day(2025, 4, 9));
        assert_eq!(
            after,
            [
                p("pmin", before(2025, 4, 9)),
                p("p20250409", before(2025, 4, 10)),
                // [04-10, 04-11): exactly one day, so it keeps its day name.
                p("p20250410", before(2025, 4, 11)),
                p("pmax", UpperBound::MaxValue),
            ]
        );
        assert_eq!(
            exact_days(&after),
            [day(2025, 4, 9), day(2025, 4, 10)].into()
        );
    }

    #[test]
    fn day_in_a_gap_between_days_splits_the_gap() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
            p("p20250415", before(2025, 4, 16)), // a human's [04-11, 04-16)
            p("pmax", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 13)).unwrap();
        assert_eq!(change.from, ["p20250415"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 13)),
                p("p20250413", before(2025, 4, 14)),
                p("pgap20250414", before(2025, 4, 16)),
            ]
        );
        // First and last day of the gap: no empty pieces.
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert_eq!(
            change.into,
            [
                p("p20250411", before(2025, 4, 12)),
                p("pgap20250412", before(2025, 4, 16))
            ]
        );
        let change = plan(&layout, day(2025, 4, 15)).unwrap();
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 15)),
                p("p20250415", before(2025, 4, 16))
            ]
        );
        // A gap of two days splits into two day partitions.
        let after = apply_and_check(&layout, day(2025, 4, 13));
        let change = plan(&after, day(2025, 4, 12)).unwrap();
        assert_eq!(change.from, ["pgap20250411"]);
        assert_eq!(
            change.into,
            [
                p("p20250411", before(2025, 4, 12)),
                p("p20250412", before(2025, 4, 13))
            ]
        );
    }

    #[test]
    fn day_already_present_needs_nothing() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
            p("pmax", UpperBound::MaxValue),
        ];
        assert_eq!(plan(&layout, day(2025, 4, 10)), None);
        // The name does not matter, the range does.
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("today", before(2025, 4, 11)),
        ];
        assert_eq!(plan(&layout, day(2025, 4, 10)), None);
    }

    #[test]
    fn maxvalue_bounds_are_parsed_and_kept_last() {
        assert_eq!(UpperBound::parse("MAXVALUE"), Some(UpperBound::MaxValue));
        assert_eq!(UpperBound::parse("maxvalue"), Some(UpperBound::MaxValue));
        assert_eq!(UpperBound::parse("'2025-04-11'"), Some(before(2025, 4, 11)));
        assert_eq!(
            UpperBound::parse("'2025-04-11 00:00:00'"),
            Some(before(2025, 4, 11))
        );
        assert_eq!(
            UpperBound::parse("'2025-04-11 00:00:00.000'"),
            Some(before(2025, 4, 11))
        );
        assert_eq!(
            UpperBound::parse("'2025-04-13 12:00:00.5'"),
            Some(UpperBound::Before(
                day(2025, 4, 13).and_hms_milli_opt(12, 0, 0, 500).unwrap()
            ))
        );
        assert_eq!(UpperBound::parse("738000"), None);
        assert_eq!(UpperBound::parse("'soon'"), None);
        assert!(before(9999, 12, 31) < UpperBound::MaxValue);

        assert!(
            validate_layout(&[p("pmax", UpperBound::MaxValue), p("x", before(2025, 1, 1))])
                .is_err()
        );
        assert!(validate_layout(&[]).is_err());
        assert!(
            validate_layout(&[p("a", before(2025, 1, 2)), p("b", before(2025, 1, 1))]).is_err()
        );
        assert!(
            validate_layout(&[p("a", before(2025, 1, 1)), p("A", before(2025, 1, 2))]).is_err()
        );

        // A single MAXVALUE partition not called pmax: the tail piece is still pmax.
        let layout = [p("future", UpperBound::MaxValue)];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(names(&change.into), ["pmin", "p20250410", "pmax"]);
    }

    #[test]
    fn a_table_without_maxvalue_is_extended() {
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("p20250410", before(2025, 4, 11)),
        ];
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert!(change.from.is_empty());
        assert_eq!(change.into, [p("p20250411", before(2025, 4, 12))]);
        assert_eq!(
            change.to_sql("iot_data"),
            "ALTER TABLE `iot_data` ADD PARTITION (\
             PARTITION `p20250411` VALUES LESS THAN ('2025-04-12 00:00:00'))"
        );
        let change = plan(&layout, day(2025, 4, 20)).unwrap();
        assert_eq!(
            change.into,
            [
                p("pgap20250411", before(2025, 4, 20)),
                p("p20250420", before(2025, 4, 21))
            ]
        );
        apply_and_check(&layout, day(2025, 4, 20));
    }

    #[test]
    fn bounds_that_are_not_midnight_are_carved_around_the_day() {
        let noon = |d: u32| UpperBound::Before(day(2025, 4, d).and_hms_opt(12, 0, 0).unwrap());
        let layout = [
            p("a", noon(10)),
            p("b", noon(11)),
            p("c", noon(13)),
            p("d", UpperBound::MaxValue),
        ];
        // 04-11 straddles b [04-10 12:00, 04-11 12:00) and c [04-11 12:00, 04-13 12:00).
        let change = plan(&layout, day(2025, 4, 11)).unwrap();
        assert_eq!(change.from, ["b", "c"]);
        assert_eq!(
            change.into,
            [
                p("pgap20250410", before(2025, 4, 11)),
                p("p20250411", before(2025, 4, 12)),
                p("pgap20250412", noon(13)),
            ]
        );
        assert!(change
            .to_sql("t")
            .contains("VALUES LESS THAN ('2025-04-13 12:00:00')"));
        apply_and_check(&layout, day(2025, 4, 11));

        // The last partition ends at noon: it is extended to the end of the day.
        let layout = [p("a", noon(10))];
        let change = plan(&layout, day(2025, 4, 10)).unwrap();
        assert_eq!(change.from, ["a"]);
        assert_eq!(
            change.into,
            [
                p("pmin", before(2025, 4, 10)),
                p("p20250410", before(2025, 4, 11))
            ]
        );
    }

    #[test]
    fn new_names_never_clash_with_partitions_that_stay() {
        // A human called a multi-day partition pmax and a day partition pmin.
        let layout = [
            p("pmin", before(2025, 4, 10)),
            p("pmax", before(2025, 4, 20)),
            p("pgap20250420", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 25)).unwrap();
        assert_eq!(change.from, ["pgap20250420"]);
        assert_eq!(names(&change.into), ["pgap20250420", "p20250425", "pmax_2"]);
        let after = apply_and_check(&layout, day(2025, 4, 25));

        // A partition named like the new day but covering other days.
        let after = apply_and_check(&after, day(2025, 4, 12));
        assert!(names(&after).contains(&"p20250412"));
        let layout = [
            p("p20250412", before(2025, 4, 10)),
            p("pmax", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 12)).unwrap();
        assert_eq!(names(&change.into), ["pgap20250410", "p20250412_2", "pmax"]);

        // Case-insensitive, as the server compares partition names.
        let layout = [
            p("PMIN", before(2025, 4, 1)),
            p("rest", UpperBound::MaxValue),
        ];
        let change = plan(&layout, day(2025, 4, 5)).unwrap();
        assert_eq!(names(&change.into), ["pgap20250401", "p20250405", "pmax"]);
    }

    #[test]
    fn many_days_in_any_order_each_get_their_own_partition() {
        let layout = article();
        let days = [
            day(2025, 4, 20),
            day(2025, 3, 1),
            day(2025, 4, 14),
            day(2025, 4, 10),
            day(2025, 4, 11),
            day(2025, 3, 2),
            day(2025, 4, 15),
        ];
        let changes = plan_all(&layout, days);
        // 04-11 already has its partition.
        assert_eq!(changes.len(), 6);
        let after = changes.iter().fold(layout, |l, c| apply(&l, c));
        validate_layout(&after).unwrap();
        for d in days {
            assert!(exact_days(&after).contains(&d), "{d}");
            let name = format!("p{}", d.format("%Y%m%d"));
            assert!(names(&after).contains(&name.as_str()), "{name}");
        }
        assert!(plan_all(&after, days).is_empty());
        assert_eq!(after.last().unwrap(), &p("pmax", UpperBound::MaxValue));
    }

    #[test]
    fn days_outside_datetime_cannot_be_planned() {
        let layout = [p("pmax", UpperBound::MaxValue)];
        assert_eq!(plan(&layout, NaiveDate::MAX), None);
        assert!(plan(&layout, LAST_PARTITIONABLE_DAY).is_some());
        assert_eq!(plan(&[], day(2025, 1, 1)), None);
    }
}
