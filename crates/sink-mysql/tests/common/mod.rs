//! What the MariaDB integration tests of this crate share: the server's address, a connection
//! with a message that says how to start the local stack, and a scratch database per test.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};

pub const DEFAULT_URL: &str = "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow";

pub fn server_opts() -> Opts {
    let url = std::env::var("IOTFLOW_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    Opts::from_url(&url)
        .unwrap_or_else(|e| panic!("IOTFLOW_TEST_MYSQL_URL is not a valid URL: {e}"))
}

pub async fn connect(opts: Opts) -> Conn {
    let target = format!(
        "{}:{} as {}",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.user().unwrap_or("?")
    );
    match tokio::time::timeout(Duration::from_secs(10), Conn::new(opts)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("{}", unreachable_message(&target, &e.to_string())),
        Err(_) => panic!("{}", unreachable_message(&target, "no answer within 10 s")),
    }
}

fn unreachable_message(target: &str, error: &str) -> String {
    format!(
        "cannot reach MariaDB at {target}: {error}\n\
         These integration tests need a real server. Start the local stack with\n    \
         bash deploy/local/start.sh\n\
         or point IOTFLOW_TEST_MYSQL_URL at a server (default {DEFAULT_URL})."
    )
}

/// Run `test` with the options of a fresh database, dropped afterwards even if the test panics.
pub async fn with_scratch_db<F, Fut>(test: F)
where
    F: FnOnce(Opts) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = server_opts();
    let mut admin = connect(base.clone()).await;
    let name = format!(
        "{}_t_{:016x}",
        base.db_name().unwrap_or("iotflow"),
        rand::random::<u64>()
    );
    admin
        .query_drop(format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create the scratch database {name} (the user needs ALL on `<db>\\_%`): {e}"
            )
        });
    let opts: Opts = OptsBuilder::from_opts(base).db_name(Some(&name)).into();
    let outcome = tokio::spawn(test(opts)).await;
    admin
        .query_drop(format!("DROP DATABASE `{name}`"))
        .await
        .unwrap_or_else(|e| panic!("cannot drop the scratch database {name}: {e}"));
    let _ = admin.disconnect().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
