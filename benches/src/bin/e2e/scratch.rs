//! The run's own scratch resources: fresh topics, MariaDB and ClickHouse databases, and their
//! removal at the end.

use std::time::Duration;

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};

use crate::{Bench, CLICKHOUSE_USER};

impl Bench {
    /// Creates a fresh topic of this run.
    pub(crate) fn topic(&mut self, what: &str, partitions: i32) -> Result<String> {
        let name = format!("bench-{}-{what}", self.tag);
        let results = self
            .rt
            .block_on(self.admin.create_topics(
                &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .with_context(|| {
                format!(
                    "creating topic {name} on {} (is the broker up? bash deploy/local/start.sh)",
                    self.args.brokers
                )
            })?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
        }
        self.topics.push(name.clone());
        Ok(name)
    }

    /// The URL of database `db` on the server of `--mysql-url`.
    pub(crate) fn db_url(&self, db: &str) -> String {
        match self.args.mysql_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{db}"),
            None => format!("{}/{db}", self.args.mysql_url),
        }
    }

    /// (Re)creates the empty scratch database `<prefix>_<what>`.
    pub(crate) fn database(&mut self, what: &str) -> Result<String> {
        let db = format!("{}_{what}", self.args.database_prefix);
        let url = self.args.mysql_url.clone();
        self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await.with_context(|| {
                format!(
                    "connecting to MariaDB at {} (bash deploy/local/start.sh)",
                    iotflow_mysql::redact(&url)
                )
            })?;
            conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                .await?;
            conn.query_drop(format!("CREATE DATABASE `{db}`")).await?;
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(())
        })?;
        if !self.databases.contains(&db) {
            self.databases.push(db.clone());
        }
        Ok(db)
    }

    pub(crate) fn count_rows(&self, db: &str) -> Result<u64> {
        let url = self.db_url(db);
        self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM iot_data").await?;
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(n.unwrap_or(0))
        })
    }

    /// A client of `--clickhouse-url` as the job's user, on no particular database. Schema
    /// validation is off: ClickHouse before 24.1 cannot describe a table the way the crate
    /// needs (as in `iotflow_sink_clickhouse::prepare`).
    pub(crate) fn clickhouse_client(&self) -> iotflow_sink_clickhouse::Client {
        iotflow_sink_clickhouse::Client::default()
            .with_url(&self.args.clickhouse_url)
            .with_user(CLICKHOUSE_USER)
            .with_validation(false)
    }

    /// `SELECT version()`: checks that ClickHouse answers before anything is measured.
    pub(crate) fn clickhouse_version(&self) -> Result<String> {
        let client = self.clickhouse_client();
        self.rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    client.query("SELECT version()").fetch_one::<String>(),
                )
                .await
            })
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
            .with_context(|| {
                format!(
                    "asking ClickHouse at {} for its version (bash deploy/local/start.sh, or --no-clickhouse)",
                    self.args.clickhouse_url
                )
            })
    }

    /// (Re)creates the empty ClickHouse scratch database `<prefix>_<what>`.
    pub(crate) fn clickhouse_database(&mut self, what: &str) -> Result<String> {
        let db = format!("{}_{what}", self.args.database_prefix);
        let client = self.clickhouse_client();
        self.rt
            .block_on(async {
                client
                    .query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                    .execute()
                    .await?;
                client
                    .query(&format!("CREATE DATABASE `{db}`"))
                    .execute()
                    .await
            })
            .with_context(|| {
                format!(
                    "creating ClickHouse database `{db}` at {}",
                    self.args.clickhouse_url
                )
            })?;
        if !self.clickhouse_databases.contains(&db) {
            self.clickhouse_databases.push(db.clone());
        }
        Ok(db)
    }

    /// Rows in `<db>.iot_data`, copies of a row counted once (`FINAL`), as the sink's
    /// guarantees are stated.
    pub(crate) fn clickhouse_count(&self, db: &str) -> Result<u64> {
        let client = self.clickhouse_client();
        self.rt
            .block_on(
                client
                    .query(&format!("SELECT count() FROM `{db}`.iot_data FINAL"))
                    .fetch_one::<u64>(),
            )
            .with_context(|| format!("counting the rows of ClickHouse `{db}`.iot_data"))
    }

    /// Deletes this run's topics and databases (unless `--keep`). Best effort: reports, never
    /// fails.
    pub(crate) fn clean_up(&mut self) {
        if self.args.keep {
            eprintln!(
                "e2e: kept topics {:?}, databases {:?} and ClickHouse databases {:?}",
                self.topics, self.databases, self.clickhouse_databases
            );
            return;
        }
        let client = self.clickhouse_client();
        let databases = std::mem::take(&mut self.clickhouse_databases);
        for db in &databases {
            let dropped = self.rt.block_on(
                client
                    .query(&format!("DROP DATABASE IF EXISTS `{db}`"))
                    .execute(),
            );
            if let Err(e) = dropped {
                eprintln!("e2e: warning: could not drop ClickHouse database {db}: {e}");
            }
        }
        let url = self.args.mysql_url.clone();
        let databases = std::mem::take(&mut self.databases);
        let dropped = self.rt.block_on(async {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            for db in &databases {
                conn.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await?;
            }
            drop(conn);
            pool.disconnect().await?;
            anyhow::Ok(())
        });
        if let Err(e) = dropped {
            eprintln!("e2e: warning: could not drop {databases:?}: {e}");
        }
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        if !topics.is_empty() {
            let deleted = self.rt.block_on(self.admin.delete_topics(
                &topics,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ));
            if let Err(e) = deleted {
                eprintln!("e2e: warning: could not delete topics {topics:?}: {e}");
            }
        }
    }
}
