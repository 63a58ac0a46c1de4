//! SQL text helpers.

/// Append `name` as a backtick-quoted identifier, doubling any backtick inside it.
pub fn quote_identifier(name: &str, out: &mut String) {
    out.push('`');
    for (i, part) in name.split('`').enumerate() {
        if i > 0 {
            out.push_str("``");
        }
        out.push_str(part);
    }
    out.push('`');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers() {
        let mut out = String::new();
        quote_identifier("iot_data", &mut out);
        out.push(' ');
        quote_identifier("we`ird", &mut out);
        assert_eq!(out, "`iot_data` `we``ird`");
    }
}
