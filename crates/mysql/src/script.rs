//! Schema scripts written for the `mysql` client.

/// The statements of a script written for the mysql client with `DELIMITER $$` sections:
/// comments and `DELIMITER` lines dropped, split at the delimiter in force.
pub fn split_script(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut delimiter = ";".to_string();
    let mut current = String::new();
    for line in script.lines() {
        let trimmed = line.trim();
        if let Some(d) = trimmed.strip_prefix("DELIMITER ") {
            delimiter = d.trim().to_string();
            continue;
        }
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        if trimmed == delimiter || trimmed.ends_with(&delimiter) {
            current.push_str(trimmed.strip_suffix(&delimiter).unwrap_or(""));
            if !current.trim().is_empty() {
                statements.push(current.trim().to_string());
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_string());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device publisher's script: tables, and triggers in `DELIMITER $$` sections.
    const DEVICE_INFO_DDL: &str = include_str!("../../../schemas/mysql/device_info.sql");

    #[test]
    fn the_schema_script_splits_into_its_statements() {
        let s = split_script(DEVICE_INFO_DDL);
        assert_eq!(s.len(), 5, "{s:#?}");
        assert!(s[0].starts_with("CREATE TABLE IF NOT EXISTS device_info ("));
        assert!(s[2].starts_with("CREATE TRIGGER IF NOT EXISTS device_info_after_insert"));
        assert!(s[3].contains("IF NEW.pboxid <> OLD.pboxid THEN"));
        assert!(s[3].trim_end().ends_with("END"), "{}", s[3]);
        assert!(s
            .iter()
            .all(|x| !x.contains("DELIMITER") && !x.contains("$$")));
    }
}
