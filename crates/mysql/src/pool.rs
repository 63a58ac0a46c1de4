//! Connection pools, checked at start with one connection within a timeout.

use std::time::Duration;

use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts};

use crate::{mysql_error_is_transient, redact};

/// Connections of the pool [`connect`] builds (the publisher and the work-time job need few).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;

/// Why a pool could not be set up. Every message names the server with its password
/// redacted ([`redact`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("invalid MySQL URL {shown}: {error}")]
    InvalidUrl {
        /// The URL, redacted.
        shown: String,
        /// The driver's complaint.
        error: mysql_async::UrlError,
    },
    /// The URL names no database.
    #[error("MySQL URL {shown} names no database (mysql://user:pass@host:port/DATABASE)")]
    NoDatabase {
        /// The URL, redacted.
        shown: String,
    },
    /// No connection within the timeout.
    #[error("cannot connect to MySQL at {shown}: no answer within {timeout:?}")]
    Timeout {
        /// The server, redacted.
        shown: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The server or the network refused the connection.
    #[error("cannot connect to MySQL at {shown}: {error}")]
    Connect {
        /// The server, redacted.
        shown: String,
        /// The driver's error.
        error: mysql_async::Error,
    },
}

impl ConnectError {
    /// Whether trying again later may succeed (no answer yet, a lost connection, too many
    /// connections), as opposed to a wrong URL, credentials or privileges.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::InvalidUrl { .. } | Self::NoDatabase { .. } => false,
            Self::Timeout { .. } => true,
            Self::Connect { error, .. } => mysql_error_is_transient(error),
        }
    }
}

/// How options built in code are shown in messages: `mysql://user@host:port/db` (they hold no
/// URL to redact, and the password is never shown).
pub fn shown(opts: &Opts) -> String {
    format!(
        "mysql://{}{}:{}/{}",
        opts.user().map(|u| format!("{u}@")).unwrap_or_default(),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    )
}

/// The options of `url`, and the URL as it may be shown ([`redact`]).
pub fn parse(url: &str) -> Result<(Opts, String), ConnectError> {
    let shown = redact(url);
    match Opts::from_url(url) {
        Ok(opts) => Ok((opts, shown)),
        Err(error) => Err(ConnectError::InvalidUrl { shown, error }),
    }
}

/// A pool on `opts` (which must name a database) of 1 to `max_connections` connections, with
/// no statement cache (every statement is sent as text or prepared once), and its first
/// connection, opened within `timeout`. `shown` names the server in messages.
pub async fn connect_pool(
    opts: Opts,
    shown: &str,
    max_connections: usize,
    timeout: Duration,
) -> Result<(Pool, Conn), ConnectError> {
    if opts.db_name().is_none() {
        return Err(ConnectError::NoDatabase {
            shown: shown.to_owned(),
        });
    }
    let constraints = PoolConstraints::new(1, max_connections.max(1)).expect("1 <= max");
    let opts = OptsBuilder::from_opts(opts)
        .pool_opts(PoolOpts::default().with_constraints(constraints))
        .stmt_cache_size(0);
    let pool = Pool::new(opts);
    let conn = match tokio::time::timeout(timeout, pool.get_conn()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            return Err(ConnectError::Connect {
                shown: shown.to_owned(),
                error,
            })
        }
        Err(_) => {
            return Err(ConnectError::Timeout {
                shown: shown.to_owned(),
                timeout,
            })
        }
    };
    Ok((pool, conn))
}

/// A pool of up to [`DEFAULT_MAX_CONNECTIONS`] on `url`, checked with one connection opened
/// within `timeout`.
pub async fn connect(url: &str, timeout: Duration) -> Result<Pool, ConnectError> {
    let (opts, shown) = parse(url)?;
    let (pool, conn) = connect_pool(opts, &shown, DEFAULT_MAX_CONNECTIONS, timeout).await?;
    drop(conn);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_urls_fail_before_any_connection_and_hide_the_password() {
        let e = connect("mysql://u:secret@h:3306", Duration::from_millis(1))
            .await
            .expect_err("no database");
        assert_eq!(
            e.to_string(),
            "MySQL URL mysql://u:***@h:3306 names no database (mysql://user:pass@host:port/DATABASE)"
        );
        assert!(!e.is_transient());
        let e = connect("postgres://u:secret@h/db", Duration::from_millis(1))
            .await
            .expect_err("not a MySQL URL");
        assert!(e
            .to_string()
            .starts_with("invalid MySQL URL postgres://u:***@h/db: "));
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn options_are_shown_without_a_password() {
        let opts: Opts = OptsBuilder::default()
            .user(Some("u"))
            .pass(Some("secret"))
            .ip_or_hostname("h")
            .tcp_port(3307)
            .db_name(Some("db"))
            .into();
        assert_eq!(shown(&opts), "mysql://u@h:3307/db");
    }
}
