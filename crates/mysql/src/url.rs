//! URLs as they may be shown.

/// A URL with its password replaced by `***`, for messages (errors, logs).
///
/// Works on the text as written, never on a parsed and decoded form: mysql_async percent-decodes
/// the password (`p%40ss` is `p@ss`), so searching the URL for the decoded password misses it,
/// while the raw text between the user's `:` and the `@` is exactly what must not be shown.
///
/// * A well-formed authority (`scheme://user:password@host...`, the `@` before the first `/`,
///   `?` or `#` after `//` and no other `@` later): the raw password text is replaced, whatever
///   it contains. `mysql://u:p%40ss@h/db` → `mysql://u:***@h/db`; an empty password stays
///   visibly empty (`mysql://u:@h/db`), it hides nothing and explains "using password: NO".
/// * Anything else with an `@` after `//` (a password holding a raw `/`, `?`, `#` or `@`, an `@`
///   in the path or query, a URL that does not parse): everything from after the user (the
///   first `:`) — or from after `//` when there is no `:` — up to the **last** `@` is replaced.
///   This may hide more than the password, never less.
/// * No `@` after `//`: there is no user information, the URL is returned as is.
///
/// Without `//` the whole text is treated as the part after it (`u:pw@h/db` → `u:***@h/db`).
pub fn redact(url: &str) -> String {
    let start = url.find("//").map_or(0, |i| i + 2);
    let rest = &url[start..];
    let Some(last_at) = rest.rfind('@') else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The user ends at the first `:` (a user name cannot hold a raw `:`; it would be `%3A`).
    let colon = rest[..last_at].find(':');
    let well_formed = last_at < authority_end;
    let hidden_from = match colon {
        // Well formed and no password at all (`user@host`): nothing to hide.
        None if well_formed => return url.to_string(),
        // Well formed with an empty password: nothing to hide either.
        Some(c) if well_formed && c + 1 == last_at => return url.to_string(),
        Some(c) => c + 1,
        None => 0,
    };
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start + hidden_from]);
    out.push_str("***");
    out.push_str(&rest[last_at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Opts;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("mysql://u:secret@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact("mysql://u@h:3306/db"), "mysql://u@h:3306/db");
    }

    /// The password `p@ss:/%word`, as it must be written in a URL.
    const ENCODED: &str = "p%40ss%3A%2F%25word";
    const DECODED: &str = "p@ss:/%word";

    fn assert_hidden(url: &str) -> String {
        let shown = redact(url);
        for secret in [ENCODED, DECODED, "%40ss", "word"] {
            assert!(!shown.contains(secret), "{url} shown as {shown}");
        }
        shown
    }

    #[test]
    fn redacts_percent_encoded_passwords_as_written() {
        // mysql_async decodes it; the raw text is what is in the URL and what must go.
        let url = format!("mysql://iotflow:{ENCODED}@127.0.0.1:3306/iotflow");
        assert_eq!(Opts::from_url(&url).unwrap().pass(), Some(DECODED));
        assert_eq!(
            assert_hidden(&url),
            "mysql://iotflow:***@127.0.0.1:3306/iotflow"
        );
        // An encoded user keeps its own text, only the password goes.
        assert_eq!(
            assert_hidden(&format!("mysql://us%40er:{ENCODED}@h/db?pool_max=3")),
            "mysql://us%40er:***@h/db?pool_max=3"
        );
        // No user name, only a password.
        assert_eq!(
            assert_hidden(&format!("mysql://:{ENCODED}@h/db")),
            "mysql://:***@h/db"
        );
        // A password that is also the host name or the database name: only the password goes.
        assert_eq!(redact("mysql://h:h@h/h"), "mysql://h:***@h/h");
    }

    #[test]
    fn urls_without_a_password_are_unchanged() {
        for url in [
            "mysql://u:@h:3306/db", // empty password
            "mysql://u@h:3306/db",  // user, no password
            "mysql://h:3306/db",    // neither
            "mysql://h/db?pool_max=3",
            "",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn unparsable_urls_never_show_the_password() {
        // A raw `/`, `?`, `#` or `@` in the password: the URL no longer says where the password
        // ends, so everything between the user and the last `@` is hidden.
        for (url, shown) in [
            ("mysql://u:p@ss:/%word@h:3306/db", "mysql://u:***@h:3306/db"),
            ("mysql://u:pa/ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:pa?ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:pa#ss%word@h/db", "mysql://u:***@h/db"),
            ("mysql://u:1234/ss%word@h/db", "mysql://u:***@h/db"),
            // No `//`, or a scheme mysql_async does not know: the same rules.
            (concat!("u:", "p%40ss%3A%2F%25word", "@h/db"), "u:***@h/db"),
            (
                concat!("postgres://u:", "p%40ss%3A%2F%25word", "@h/db"),
                "postgres://u:***@h/db",
            ),
            (
                concat!("mysql:/u:", "p%40ss%3A%2F%25word", "@h/db"),
                "mysql:***@h/db",
            ),
            // Invalid escapes and unknown parameters do not matter either.
            (
                "mysql://u:%zz%word@h/db?what=1",
                "mysql://u:***@h/db?what=1",
            ),
            // No `:` before the last `@`: all of it may be a password.
            ("mysql://pa/ss%word@h/db", "mysql://***@h/db"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert!(!redact(url).contains("word"), "{url}");
        }
        // The decoded password pasted into a URL as is.
        assert_eq!(
            assert_hidden(&format!("mysql://u:{DECODED}@h/db")),
            "mysql://u:***@h/db"
        );
        // An `@` in the query hides more than needed, never less.
        assert_eq!(
            assert_hidden(&format!("mysql://u:{ENCODED}@h/db?x=a@b")),
            "mysql://u:***@b"
        );
    }

    #[test]
    fn urls_in_messages_hide_the_password() {
        assert_eq!(
            redact("mysql://u:secret@h:3306/db"),
            "mysql://u:***@h:3306/db"
        );
        assert_eq!(redact("mysql://h/db"), "mysql://h/db");
        // mysql_async decodes `p%40ss%3A%2F%25word` to `p@ss:/%word`: neither may show.
        let shown = redact("mysql://u:p%40ss%3A%2F%25word@h:3306/db");
        assert_eq!(shown, "mysql://u:***@h:3306/db");
    }
}
