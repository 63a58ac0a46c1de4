//! The session `sql_mode` that backslash-escaped string literals rely on.

use mysql_async::{Opts, OptsBuilder};

/// The statement a pool runs on every connection it opens, and again after every
/// `COM_RESET_CONNECTION` (mysql_async resets a connection each time it goes back to the pool;
/// a reset puts the session back to the server's defaults): it takes `NO_BACKSLASH_ESCAPES`
/// out of the session's `sql_mode` and keeps every other mode the server or the DBA chose
/// (strictness included), without leaving an empty element in the list.
///
/// The MySQL sink escapes string literals with backslashes. Under `NO_BACKSLASH_ESCAPES` a
/// backslash is an ordinary character, so `'it\'s'` would end the literal after `it\` and let
/// the rest of the value be read as SQL. That makes the session mode part of the sink's
/// injection safety, which is why it is set on each connection rather than checked once on the
/// first.
pub const SESSION_SQL_MODE: &str = "SET SESSION sql_mode = TRIM(BOTH ',' FROM \
     REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), ',NO_BACKSLASH_ESCAPES,', ','))";

/// `opts` with [`SESSION_SQL_MODE`] run on every session, after every command already in
/// `opts.setup()` (and after `opts.init()`, which runs before the setup commands).
pub fn with_session_sql_mode(opts: Opts) -> Opts {
    // mysql_async runs setup commands from the last to the first: put ours first so it runs
    // last and nothing after it can bring the mode back.
    let mut setup = vec![SESSION_SQL_MODE.to_string()];
    setup.extend(opts.setup().iter().cloned());
    OptsBuilder::from_opts(opts).setup(setup).into()
}

/// Whether a session with this `@@sql_mode` reads string literals the way a backslash-escaping
/// encoder writes them (that is, without `NO_BACKSLASH_ESCAPES`).
///
/// This is a check, not the protection: [`with_session_sql_mode`] makes a pool run
/// [`SESSION_SQL_MODE`] on every connection (when it is opened and after every reset); the
/// sink's start-up check calls this on its first connection and refuses to start if the server
/// kept the mode anyway.
pub fn sql_mode_is_compatible(sql_mode: &str) -> bool {
    !sql_mode
        .split(',')
        .any(|mode| mode.trim().eq_ignore_ascii_case("NO_BACKSLASH_ESCAPES"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_mode_check_spots_no_backslash_escapes() {
        assert!(sql_mode_is_compatible(""));
        assert!(sql_mode_is_compatible(
            "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"
        ));
        assert!(!sql_mode_is_compatible("ANSI_QUOTES,NO_BACKSLASH_ESCAPES"));
        assert!(!sql_mode_is_compatible("no_backslash_escapes"));
    }

    #[test]
    fn the_session_mode_runs_last() {
        let opts: Opts = OptsBuilder::default()
            .setup(vec!["SET @a = 1".to_string()])
            .into();
        let opts = with_session_sql_mode(opts);
        // Run from the last to the first: ours is first in the list.
        assert_eq!(opts.setup(), [SESSION_SQL_MODE, "SET @a = 1"]);
    }
}
