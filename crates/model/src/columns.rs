//! What the stores' columns can hold: one rule set for the parser and every sink.
//!
//! The column types in `schemas/` are the source of truth (MySQL `iot_data.sql`, ClickHouse
//! `iot_data.sql`); the constants below restate them, and a test reads the schema files to keep
//! the two equal. The parser accepts a reading only if every value fits, so a record that
//! parses can never be refused by a store for its values: a value a column cannot hold is a
//! dead letter at the parser, with the field and the limit named, and never a batch error that
//! stops a sink.

use rust_decimal::{Decimal, RoundingStrategy};

/// Fractional digits of every decimal column (`DECIMAL(24,8)`, `DECIMAL(11,8)`).
pub const DECIMAL_SCALE: u32 = 8;
/// Integer digits of `metric` and `work_threshold` (`DECIMAL(24,8)`: 24 - 8).
pub const METRIC_INT_DIGITS: u32 = 16;
/// Integer digits of `latitude` and `longitude` (`DECIMAL(11,8)`: 11 - 8).
pub const COORDINATE_INT_DIGITS: u32 = 3;
/// Characters of `pboxid` (`VARCHAR(64)`).
pub const PBOXID_MAX_CHARS: usize = 64;
/// Characters of the device's text columns (`VARCHAR(128)`): company, site, line,
/// device_name, model.
pub const TEXT_MAX_CHARS: usize = 128;
/// Characters of `device_status` (`VARCHAR(32)`).
pub const STATUS_MAX_CHARS: usize = 32;

/// `value` as the stores keep it: rounded half away from zero to [`DECIMAL_SCALE`] places,
/// as MySQL rounds a longer literal.
pub fn to_scale(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(DECIMAL_SCALE, RoundingStrategy::MidpointAwayFromZero)
}

/// Whether `value`, rounded to the column scale, fits a decimal column with `int_digits`
/// integer digits. (`9999999999999999.999999995` rounds to `1e16` and does not fit
/// `DECIMAL(24,8)`, although it is below `1e16`.)
pub fn fits_decimal(value: Decimal, int_digits: u32) -> bool {
    to_scale(value).abs() < Decimal::from(10u64.pow(int_digits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    const MYSQL: &str = include_str!("../../../schemas/mysql/iot_data.sql");
    const CLICKHOUSE: &str = include_str!("../../../schemas/clickhouse/iot_data.sql");

    /// The type text of `column` in a `CREATE TABLE` of `ddl` (the word after the name).
    fn column_type(ddl: &str, column: &str) -> String {
        ddl.lines()
            .map(str::trim)
            .find_map(|l| {
                let rest = l.strip_prefix(column)?;
                rest.starts_with(' ').then(|| {
                    let t = rest.trim_start();
                    // Up to the closing parenthesis of the type, or the first space.
                    match t.find('(') {
                        Some(open) if open < t.find(' ').unwrap_or(usize::MAX) => {
                            let mut depth = 0;
                            let close = t
                                .char_indices()
                                .skip(open)
                                .find(|&(_, c)| {
                                    depth += match c {
                                        '(' => 1,
                                        ')' => -1,
                                        _ => 0,
                                    };
                                    depth == 0
                                })
                                .expect("closing parenthesis")
                                .0;
                            t[..=close].replace(' ', "")
                        }
                        _ => t.split(' ').next().unwrap_or("").to_string(),
                    }
                })
            })
            .unwrap_or_else(|| panic!("column {column} not found"))
    }

    #[test]
    fn the_rules_are_the_schema_files_column_types() {
        let decimal = |p: u32| format!("DECIMAL({},{DECIMAL_SCALE})", p + DECIMAL_SCALE);
        for (column, want) in [
            ("metric", decimal(METRIC_INT_DIGITS)),
            ("work_threshold", decimal(METRIC_INT_DIGITS)),
            ("latitude", decimal(COORDINATE_INT_DIGITS)),
            ("longitude", decimal(COORDINATE_INT_DIGITS)),
            ("pboxid", format!("VARCHAR({PBOXID_MAX_CHARS})")),
            ("company", format!("VARCHAR({TEXT_MAX_CHARS})")),
            ("site", format!("VARCHAR({TEXT_MAX_CHARS})")),
            ("line", format!("VARCHAR({TEXT_MAX_CHARS})")),
            ("device_name", format!("VARCHAR({TEXT_MAX_CHARS})")),
            ("model", format!("VARCHAR({TEXT_MAX_CHARS})")),
            ("device_status", format!("VARCHAR({STATUS_MAX_CHARS})")),
        ] {
            assert_eq!(column_type(MYSQL, column), want, "MySQL {column}");
        }
        for (column, int_digits) in [
            ("metric", METRIC_INT_DIGITS),
            ("latitude", COORDINATE_INT_DIGITS),
            ("longitude", COORDINATE_INT_DIGITS),
        ] {
            assert_eq!(
                column_type(CLICKHOUSE, column),
                format!("Decimal({},{DECIMAL_SCALE})", int_digits + DECIMAL_SCALE),
                "ClickHouse {column}"
            );
        }
        assert_eq!(
            column_type(CLICKHOUSE, "work_threshold"),
            format!(
                "Nullable(Decimal({},{DECIMAL_SCALE}))",
                METRIC_INT_DIGITS + DECIMAL_SCALE
            )
        );
    }

    #[test]
    fn fits_after_rounding_to_the_column_scale() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert!(fits_decimal(d("9999999999999999.99999999"), 16));
        assert!(fits_decimal(d("9999999999999999.999999994"), 16));
        assert!(!fits_decimal(d("9999999999999999.999999995"), 16));
        assert!(!fits_decimal(d("-9999999999999999.999999995"), 16));
        assert!(!fits_decimal(d("10000000000000000"), 16));
        assert!(fits_decimal(d("-180"), 3));
        assert!(!fits_decimal(d("999.999999995"), 3));
        assert_eq!(to_scale(d("0.000000005")), d("0.00000001"));
    }
}
