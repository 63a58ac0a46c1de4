//! The start-up check (`prepare`) and the sessions of the pool it returns, against a real
//! MariaDB (or MySQL) server.
//!
//! The server is read from `IOTFLOW_TEST_MYSQL_URL`, by default
//! `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow` (`bash deploy/local/start.sh` provides it).
//! When no server answers, the tests fail and say so: they never pass silently.

use std::time::Duration;

use iotflow_sink_mysql::writer::prepare;
use mysql_async::{Conn, Opts};

const DEFAULT_URL: &str = "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow";

fn server_opts() -> Opts {
    let url = std::env::var("IOTFLOW_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    Opts::from_url(&url)
        .unwrap_or_else(|e| panic!("IOTFLOW_TEST_MYSQL_URL is not a valid URL: {e}"))
}

async fn connect(opts: impl Into<Opts>) -> Conn {
    let opts = opts.into();
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", unreachable_message(&opts, &e.to_string())),
        Err(_) => panic!("{}", unreachable_message(&opts, "no answer within 10 s")),
    }
}

fn unreachable_message(opts: &Opts, error: &str) -> String {
    format!(
        "cannot reach MariaDB at {}:{}: {error}\n\
         These integration tests need a real server. Start the local stack with\n    \
         bash deploy/local/start.sh\n\
         or point IOTFLOW_TEST_MYSQL_URL at a server (default {DEFAULT_URL}).",
        opts.ip_or_hostname(),
        opts.tcp_port()
    )
}

/// The password `p@ss:/%word`, as it must be written in a URL.
const ENCODED: &str = "p%40ss%3A%2F%25word";
const DECODED: &str = "p@ss:/%word";

#[tokio::test]
async fn prepare_errors_never_show_a_percent_encoded_password() {
    let base = server_opts();
    // Make sure a server is there, so the failure below is the wrong password and not a missing
    // server (whose message would pass the test for the wrong reason).
    connect(base.clone()).await.disconnect().await.ok();
    let url = format!(
        "mysql://{}:{ENCODED}@{}:{}/{}",
        base.user().unwrap_or("iotflow"),
        base.ip_or_hostname(),
        base.tcp_port(),
        base.db_name().unwrap_or("iotflow")
    );
    let error = prepare(&url, "iot_data", false, 2, Duration::from_secs(10))
        .await
        .map(drop)
        .expect_err("a wrong password must fail the start");
    assert!(
        error.contains("Access denied"),
        "expected the server's refusal of the password, got: {error}"
    );
    assert!(
        error.contains(":***@"),
        "the URL is shown redacted: {error}"
    );
    for secret in [ENCODED, DECODED, "%40ss", "p@ss"] {
        assert!(!error.contains(secret), "{secret:?} in: {error}");
    }
}
