//! What every iotflow component talking to MySQL / MariaDB shares.
//!
//! The MySQL sink (`iotflow-sink-mysql`), the device publisher and the work-time job each open
//! a pool, show URLs in messages, run schema scripts and decide whether an error is worth
//! retrying. Those pieces live here, once:
//!
//! * [`pool`]: a pool with bounded connections, checked with one connection within a timeout
//!   ([`connect`], [`connect_pool`]);
//! * [`url`]: [`redact`], the URL as it may be shown;
//! * [`script`]: [`split_script`], the statements of a `DELIMITER` script;
//! * [`errors`]: [`mysql_error_is_transient`] and its server-code table;
//! * [`session`]: the session `sql_mode` ([`SESSION_SQL_MODE`]) string literals rely on;
//! * [`sql`]: [`quote_identifier`], identifiers in SQL text.
pub mod errors;
pub mod pool;
pub mod script;
pub mod session;
pub mod sql;
pub mod url;

pub use errors::{mysql_error_is_transient, TRANSIENT_SERVER_CODES};
pub use pool::{connect, connect_pool, shown, ConnectError};
pub use script::split_script;
pub use session::{sql_mode_is_compatible, with_session_sql_mode, SESSION_SQL_MODE};
pub use sql::quote_identifier;
pub use url::redact;
