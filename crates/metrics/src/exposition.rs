//! Reading the Prometheus text exposition format: iotflow's one parser, used by `iotflow status`,
//! the integration tests and the benchmarks to read `/metrics` scrapes.
//!
//! Why not a crates.io parser: `prometheus-parse` 0.2 (tried) splits label values on `,` and
//! `=` and drops lines with escaped quotes, so a `job_name` holding a comma would read wrong;
//! `prom_text_format_parser` 0.1 keeps escapes undecoded and rejects a whole scrape over one
//! odd line; `openmetrics-parser` is LGPL. The format is small (one sample per line), and this
//! parser is exact on what the prometheus crate's `TextEncoder` writes (escapes, `+Inf`, `NaN`)
//! and skips what it cannot read instead of guessing.

use std::collections::BTreeMap;

/// One sample: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` suffixes as written).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every `label = value` of `filter` holds.
    pub fn matches(&self, filter: &[(&str, &str)]) -> bool {
        filter.iter().all(|(k, v)| self.label(k) == Some(v))
    }
}

/// A parsed exposition.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses the text format; comment lines and lines it cannot read are skipped.
    pub fn parse(text: &str) -> Exposition {
        Exposition {
            samples: text.lines().filter_map(parse_sample).collect(),
        }
    }

    /// Whether any sample of `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.name == name)
    }

    /// Sum of the samples of `name` matching every `label = value` of `filter`; `None` when
    /// none matches.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.matches(filter))
            .map(|s| s.value)
            .reduce(|a, b| a + b)
    }

    /// Like [`Exposition::sum`], grouped by the value of label `by`.
    pub fn sum_by(&self, name: &str, by: &str, filter: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self
            .samples
            .iter()
            .filter(|s| s.name == name && s.matches(filter))
        {
            *out.entry(s.label(by).unwrap_or_default().to_string())
                .or_insert(0.0) += s.value;
        }
        out
    }

    /// The first sample of `name`.
    pub fn first(&self, name: &str) -> Option<&Sample> {
        self.samples.iter().find(|s| s.name == name)
    }
}

/// Parses one line `name{a="x",b="y"} value [timestamp]`; `None` for comments, blank lines and
/// anything malformed.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '"' => break i,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            };
            labels.push((key, value));
            rest = &rest[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_with_labels_escapes_and_specials() {
        let s =
            parse_sample(r#"m_total{a="x",b="q\"uo,te}",c="back\\slash\nnl"} 12.5 1700000000000"#)
                .unwrap();
        assert_eq!(s.name, "m_total");
        assert_eq!(s.label("a"), Some("x"));
        assert_eq!(s.label("b"), Some("q\"uo,te}"));
        assert_eq!(s.label("c"), Some("back\\slash\nnl"));
        assert_eq!(s.value, 12.5);
        let s = parse_sample("up 1").unwrap();
        assert_eq!((s.name.as_str(), s.labels.len(), s.value), ("up", 0, 1.0));
        assert_eq!(
            parse_sample(r#"h_bucket{le="+Inf"} +Inf"#).unwrap().value,
            f64::INFINITY
        );
        assert!(parse_sample(r#"g{} NaN"#).unwrap().value.is_nan());
        assert_eq!(parse_sample("g{a=\"1\",} -3e2").unwrap().value, -300.0);
        for bad in [
            "# HELP x y",
            "",
            "   ",
            "x{a=\"1\"",
            "x{a=1} 2",
            "x",
            "x{a=\"1\"} abc",
            "9x 1",
        ] {
            assert_eq!(parse_sample(bad), None, "{bad:?}");
        }
    }
}
