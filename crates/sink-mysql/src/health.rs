//! The start-up check: connect, check the session, create or find the table.

use std::time::Duration;

use iotflow_config::{MysqlConfig, MysqlWriteMethod};
use iotflow_mysql::pool::{connect_pool, parse, shown, ConnectError};
use iotflow_mysql::{sql_mode_is_compatible, with_session_sql_mode};
use iotflow_sink::SinkError;
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool};

use crate::load_data::{check_local_infile, SESSION_MAX_ERROR_COUNT};
use crate::retry::classify;
use crate::MysqlConnector;

/// The DDL of `iot_data`, applied at start when `mysql.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/mysql/iot_data.sql");

/// How long the start-up check waits for its first connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections of the pool for a process with `workers` worker threads writing on
/// `connections_per_worker` connections each: one more per worker (being returned and reset)
/// and two spare.
pub fn pool_size(workers: usize, connections_per_worker: usize) -> usize {
    workers * (connections_per_worker.max(1) + 1) + 2
}

/// Connects to `config.url`, checks the server, and (with `config.create_table`) creates the
/// table; the pool has [`pool_size`]`(workers, config.connections_per_worker)` connections.
/// With `mysql.write_method = "load_data"` the server must have `local_infile` ON
/// ([`crate::load_data::check_local_infile`]): the start fails otherwise, saying how to fix it. Fails with a message that names
/// the server (password redacted, see [`iotflow_mysql::redact`]) and the problem, for the job
/// to print before it starts any worker: transient when the server did not answer or is
/// overloaded, definite for a wrong URL, credentials, privileges or schema.
///
/// # The pool's sessions
///
/// Every connection of the returned pool runs [`iotflow_mysql::SESSION_SQL_MODE`] when it is
/// opened and after every reset, so string literals are read the way the encoder writes them
/// whatever the server's global `sql_mode`; the first connection checks the result with
/// [`sql_mode_is_compatible`] and the start fails if the server kept `NO_BACKSLASH_ESCAPES`.
///
/// Multi-statements cannot be switched off: mysql_async 0.37 always sends
/// `CLIENT_MULTI_STATEMENTS` in its handshake and has no `COM_SET_OPTION`. What the sink sends
/// is safe without it: identifiers are backtick-quoted with backticks doubled
/// ([`crate::encoder::quote_identifier`]; `mysql.table` is also limited to letters, digits and
/// underscores by the config), values are numbers, escaped literals or `NULL`, so a `;` can
/// only appear inside a correctly escaped string literal. The DDL of `create_table`
/// ([`IOT_DATA_DDL`]) is run as one script and may hold several statements.
pub async fn prepare(config: &MysqlConfig, workers: usize) -> Result<MysqlConnector, SinkError> {
    let (opts, shown) = parse(&config.url).map_err(connect_error)?;
    let pool = prepare_checked(
        opts,
        &shown,
        &config.table,
        config.create_table,
        pool_size(workers, config.connections_per_worker),
    )
    .await?;
    if config.write_method == MysqlWriteMethod::LoadData {
        let mut conn = pool
            .get_conn()
            .await
            .map_err(|e| classify(&format!("MySQL at {shown}"), &e))?;
        check_local_infile(&mut conn, &shown)
            .await
            .map_err(|e| classify(&format!("MySQL at {shown}"), &e))?
            .map_err(SinkError::Definite)?;
    }
    Ok(MysqlConnector::new(config.clone(), pool))
}

/// [`prepare`] with options built in code rather than parsed from a URL, and a pool of
/// `max_connections`. Commands already in `opts.setup()` run before
/// [`iotflow_mysql::SESSION_SQL_MODE`], and `opts.init()` commands before both (tests use an
/// `init` command to open sessions the way a server with `NO_BACKSLASH_ESCAPES` in its global
/// `sql_mode` would). Messages name the server as `mysql://user@host:port/db`.
pub async fn prepare_opts(
    opts: Opts,
    table: &str,
    create_table: bool,
    max_connections: usize,
) -> Result<Pool, SinkError> {
    let shown = shown(&opts);
    prepare_checked(opts, &shown, table, create_table, max_connections).await
}

fn connect_error(e: ConnectError) -> SinkError {
    if e.is_transient() {
        SinkError::Transient(e.to_string())
    } else {
        SinkError::Definite(e.to_string())
    }
}

async fn prepare_checked(
    opts: Opts,
    shown: &str,
    table: &str,
    create_table: bool,
    max_connections: usize,
) -> Result<Pool, SinkError> {
    // SHOW WARNINGS after a load lists up to max_error_count warnings (crate::load_data).
    let mut setup = vec![SESSION_MAX_ERROR_COUNT.to_string()];
    setup.extend(opts.setup().iter().cloned());
    let opts = with_session_sql_mode(OptsBuilder::from_opts(opts).setup(setup).into());
    let (pool, mut conn) = connect_pool(opts, shown, max_connections, CONNECT_TIMEOUT)
        .await
        .map_err(connect_error)?;
    let at = format!("MySQL at {shown}");
    let sql_mode: Option<String> = conn
        .query_first("SELECT @@SESSION.sql_mode")
        .await
        .map_err(|e| classify(&at, &e))?;
    if !sql_mode_is_compatible(sql_mode.as_deref().unwrap_or("")) {
        return Err(SinkError::Definite(format!(
            "MySQL at {shown} keeps NO_BACKSLASH_ESCAPES in the session sql_mode even after the sink takes it out, which changes string escaping; remove it from the server's sql_mode"
        )));
    }
    if create_table {
        let ddl = IOT_DATA_DDL
            .replace("`iot_data`", &format!("`{table}`"))
            .replace(" iot_data ", &format!(" {table} "));
        conn.query_drop(ddl)
            .await
            .map_err(|e| classify(&format!("creating table `{table}` on {shown}"), &e))?;
    }
    let exists: Option<String> = conn
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(|e| classify(&at, &e))?;
    if exists.is_none() {
        return Err(SinkError::Definite(format!(
            "table `{table}` does not exist on {shown}; apply schemas/mysql/iot_data.sql or set mysql.create_table = true"
        )));
    }
    drop(conn);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_has_the_writing_connections_one_more_per_worker_and_two_spare() {
        assert_eq!(pool_size(1, 1), 4);
        assert_eq!(pool_size(4, 1), 10);
        assert_eq!(pool_size(2, 4), 12);
        assert_eq!(pool_size(2, 0), 6);
    }

    #[tokio::test]
    async fn a_url_without_a_database_is_a_definite_error_with_the_password_hidden() {
        let config = MysqlConfig {
            url: "mysql://u:secret@127.0.0.1:1".into(),
            ..MysqlConfig::default()
        };
        let e = prepare(&config, 1)
            .await
            .map(drop)
            .expect_err("no database");
        assert!(!e.is_transient());
        assert!(
            e.to_string()
                .contains("mysql://u:***@127.0.0.1:1 names no database"),
            "{e}"
        );
    }
}
