//! The raw measurements the job is compared with: (2) consuming the topic with a plain
//! consumer, (3) inserting the sink's statements into MariaDB, (6a) inserting the sink's rows
//! into ClickHouse.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use iotflow_benches::report::CLICKHOUSE_BATCH_ROWS;
use iotflow_benches::start_time;
use iotflow_model::{DeviceInfo, Enriched, Reading};
use iotflow_sink_clickhouse::Row as ClickhouseRow;
use iotflow_sink_mysql::partitions::PartitionManager;
use iotflow_sink_mysql::IOT_DATA_DDL;
use mysql_async::prelude::Queryable;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{Bench, CLICKHOUSE_USER};

impl Bench {
    /// (6a) Inserts `rows` into a fresh `iot_data`, created as the job creates it, in batches
    /// of [`CLICKHOUSE_BATCH_ROWS`], one after the other on one client; the time taken by the
    /// inserts alone (RowBinary encoding included: the crate encodes while it sends, each row
    /// from its enriched reading, as the sink does).
    pub(crate) fn clickhouse_insert(&mut self, rows: &Arc<Vec<Enriched>>) -> Result<Duration> {
        let db = self.clickhouse_database("ch_raw")?;
        let url = self.args.clickhouse_url.clone();
        let took = self.rt.block_on(async {
            let config = iotflow_sink_clickhouse::ClickhouseConfig {
                url,
                user: CLICKHOUSE_USER.into(),
                database: db.clone(),
                ..Default::default()
            };
            let prepared = iotflow_sink_clickhouse::prepare(&config, 1).await?;
            let client = prepared.client().clone();
            let start = Instant::now();
            for batch in rows.chunks(CLICKHOUSE_BATCH_ROWS) {
                let mut insert = client.insert::<ClickhouseRow<'static>>("iot_data").await?;
                for row in batch {
                    insert.write(&ClickhouseRow::from(row)).await?;
                }
                insert.end().await?;
            }
            anyhow::Ok(start.elapsed())
        });
        let took = took.with_context(|| format!("inserting into ClickHouse `{db}`.iot_data"))?;
        let stored = self.clickhouse_count(&db)?;
        ensure!(
            stored == rows.len() as u64,
            "ClickHouse `{db}`.iot_data holds {stored} rows (FINAL) after inserting {}",
            rows.len()
        );
        Ok(took)
    }

    /// A consumer of the harness's own group `bench-<tag>-<what>` (no commits) and every
    /// partition of `topic` from the beginning, to `assign` (a group join would take the
    /// local broker ~20 s).
    pub(crate) fn reader_from_start(
        &self,
        topic: &str,
        what: &str,
    ) -> Result<(BaseConsumer, TopicPartitionList)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.args.brokers)
            .set("group.id", format!("bench-{}-{what}", self.tag))
            .set("enable.auto.commit", "false")
            .create()
            .context("creating a Kafka consumer")?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.args.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        Ok((consumer, tpl))
    }

    /// Reads every message of `topic` (all partitions, from the beginning); the time taken.
    pub(crate) fn consume_all(&self, topic: &str, expected: u64) -> Result<Duration> {
        let (consumer, tpl) = self.reader_from_start(topic, "raw")?;
        let start = Instant::now();
        consumer.assign(&tpl)?;
        let (mut count, mut bytes) = (0u64, 0usize);
        let mut last = Instant::now();
        while count < expected {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    count += 1;
                    bytes += m.payload_len();
                    last = Instant::now();
                }
                Some(Err(e)) => bail!("consuming {topic}: {e}"),
                None => ensure!(
                    last.elapsed() < Duration::from_secs(30),
                    "consumed only {count} of {expected} messages of {topic} ({bytes} bytes)"
                ),
            }
        }
        Ok(start.elapsed())
    }

    /// Runs `statements` into a fresh `iot_data` in `db` over `connections` connections; the
    /// time taken by the statements alone.
    pub(crate) fn insert(
        &self,
        db: &str,
        statements: &Arc<Vec<String>>,
        connections: usize,
    ) -> Result<Duration> {
        let url = self.db_url(db);
        let statements = statements.clone();
        self.rt.block_on(async move {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            conn.query_drop("DROP TABLE IF EXISTS iot_data").await?;
            conn.query_drop(IOT_DATA_DDL).await?;
            // The day partition, as the sink creates it before its first write.
            PartitionManager::new("iot_data")
                .ensure_days(&mut conn, [start_time().date()])
                .await
                .context("creating the day partition")?;
            let mut conns = vec![conn];
            while conns.len() < connections {
                conns.push(pool.get_conn().await?);
            }
            let start = Instant::now();
            let tasks: Vec<_> = conns
                .into_iter()
                .enumerate()
                .map(|(i, mut conn)| {
                    let statements = statements.clone();
                    tokio::spawn(async move {
                        for sql in statements.iter().skip(i).step_by(connections) {
                            conn.query_drop(sql.as_str()).await?;
                        }
                        Ok::<_, mysql_async::Error>(conn)
                    })
                })
                .collect();
            let mut done = Vec::new();
            for task in tasks {
                done.push(task.await.context("insert task")??);
            }
            let took = start.elapsed();
            drop(done);
            pool.disconnect().await?;
            anyhow::Ok(took)
        })
    }
}

/// The ClickHouse sink's rows for `readings`: the readings enriched with `devices` as the job
/// enriches them, each device's record shared (the counterpart of `iotflow_benches::rows`,
/// which gives the MySQL sink's).
pub(crate) fn clickhouse_rows(readings: &[Reading], devices: &[DeviceInfo]) -> Vec<Enriched> {
    let by_id: HashMap<&str, Arc<DeviceInfo>> = devices
        .iter()
        .map(|d| (d.pboxid.as_str(), Arc::new(d.clone())))
        .collect();
    readings
        .iter()
        .map(|r| Enriched {
            reading: r.clone(),
            device: by_id.get(r.pboxid.as_str()).cloned(),
        })
        .collect()
}
