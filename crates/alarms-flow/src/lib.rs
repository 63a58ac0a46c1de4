//! The streaming job's alarms (`docs/alarms.md`): [`prepare`] checks MySQL, creates the tables,
//! reads the stored state and opens the alarms topic's producer once per process; each worker's
//! [`Alarms::alarms`] operator evaluates the rules on its devices and checkpoints.

mod board;
mod operator;
mod store;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use iotflow_alarms::{Rule, StoredClock};
use iotflow_config::{AlarmsConfig, Config};
use iotflow_metrics::Metrics;
use iotflow_sink::RetryPolicy;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use rdkafka::producer::FutureProducer;

pub use board::{event_id, event_json, route, time_text, AlarmBoard, AlarmMetrics};
pub use operator::{sample_of, Alarms, Point};
pub use store::{load, Checkpoint, CheckpointWriter, Stored, ALARM_STATE_DDL, DEVICE_ALARMS_DDL};

/// What every worker's alarm operator of a process shares.
#[derive(Clone)]
pub struct AlarmsConnector {
    /// `[alarms]`.
    pub options: AlarmsConfig,
    /// The rules.
    pub rules: Vec<Rule>,
    /// The consumer group the state belongs to (`kafka.group_id`).
    pub group: String,
    /// MySQL.
    pub pool: Pool,
    /// Producer of the alarms topic.
    pub producer: FutureProducer,
    /// The state stored by the previous run.
    pub stored: Arc<Stored>,
    /// What the process shows.
    pub board: Arc<Mutex<AlarmBoard>>,
    /// The metrics.
    pub metrics: AlarmMetrics,
    /// Longest one checkpoint write may take.
    pub write_timeout: Duration,
    /// Backoff of failed checkpoint writes.
    pub retry: RetryPolicy,
    /// The readings topic's partitions: each holds event time back from the start until it
    /// has given a reading or been quiet for `alarms.idle_partition_ms` (empty for file input:
    /// files count once they are read from).
    pub partitions: Vec<i32>,
}

/// A stable hash of a device id (FNV-1a): which worker of `peers` owns a device must be the
/// same in every process and every run.
pub fn device_hash(pboxid: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pboxid.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The worker of `peers` that owns `pboxid` (as timely's exchange routes it).
pub fn worker_of(pboxid: &str, peers: usize) -> usize {
    (device_hash(pboxid) % peers.max(1) as u64) as usize
}

impl AlarmsConnector {
    /// The stored clock of `worker` of `peers`: its own when the cluster had this shape,
    /// otherwise the earliest of the previous shape's (every held reading of them is merged).
    pub fn clock_for(&self, worker: usize, peers: usize) -> StoredClock {
        let clocks = &self.stored.clocks;
        if let Some((_, _, c)) = clocks.iter().find(|(w, p, _)| *w == worker && *p == peers) {
            return c.clone();
        }
        if clocks.is_empty() {
            return StoredClock::default();
        }
        let released = clocks.iter().filter_map(|(_, _, c)| c.released).min();
        let mut newest: std::collections::BTreeMap<i32, i64> = Default::default();
        for (_, _, c) in clocks {
            for (p, t) in &c.newest {
                let e = newest.entry(*p).or_insert(*t);
                *e = (*e).min(*t);
            }
        }
        // The rule set of the worker that applied the newest one.
        let rules = clocks
            .iter()
            .filter_map(|(_, _, c)| c.rules.as_deref())
            .filter_map(|r| {
                serde_json::from_str::<operator::InEffect>(r)
                    .ok()
                    .map(|e| (e, r))
            })
            .max_by_key(|(e, _)| (e.set.effective_ms, e.set.version, e.applied_at))
            .map(|(_, r)| r.to_string());
        StoredClock {
            released,
            newest: newest.into_iter().collect(),
            held: clocks.iter().flat_map(|(_, _, c)| c.held.clone()).collect(),
            rules,
        }
    }
}

/// The rule sets of `alarms.rules_topic` from its records, on every worker. A record that is
/// not a rule set is logged (with its position) and skipped; the rules in effect stay.
pub fn rule_sets<'scope>(
    records: timely::dataflow::StreamVec<'scope, u64, iotflow_kafka::KafkaRecord>,
    topic: String,
) -> timely::dataflow::StreamVec<'scope, u64, iotflow_config::RuleSet> {
    use timely::dataflow::operators::vec::{Broadcast, Map};
    records
        .flat_map(move |r| {
            let set = r
                .payload
                .as_deref()
                .map(serde_json::from_slice::<iotflow_config::RuleSet>);
            match set {
                Some(Ok(set)) => Some(set),
                Some(Err(e)) => {
                    tracing::error!(topic = %topic, partition = r.partition, offset = r.offset, "not an alarm rule set, skipped: {e}");
                    None
                }
                None => None,
            }
        })
        .broadcast()
}

fn ddl(template: &str, default: &str, table: &str) -> String {
    let mut quoted = String::new();
    iotflow_mysql::quote_identifier(table, &mut quoted);
    template.replace(&format!("`{default}`"), &quoted)
}

/// Checks MySQL, creates the alarm tables when missing, reads the state stored for the group,
/// opens the alarms topic's producer, and registers the metrics and `/api/alarms`. With
/// `readings_topic`, its partitions are looked up (see [`AlarmsConnector::partitions`]).
pub async fn prepare(
    config: &Config,
    metrics: &Arc<Metrics>,
    readings_topic: bool,
) -> Result<AlarmsConnector, String> {
    let a = &config.alarms;
    let rules = a.parsed_rules().map_err(|e| e.to_string())?;
    let (opts, shown) = iotflow_mysql::pool::parse(&config.mysql.url).map_err(|e| e.to_string())?;
    let opts = iotflow_mysql::with_session_sql_mode(opts);
    let (pool, mut conn) = iotflow_mysql::connect_pool(opts, &shown, 4, Duration::from_secs(10))
        .await
        .map_err(|e| format!("alarms need MySQL (mysql.url): {e}"))?;
    for (template, default, table) in [
        (DEVICE_ALARMS_DDL, "device_alarms", &a.table),
        (ALARM_STATE_DDL, "alarm_state", &a.state_table),
    ] {
        let sql = ddl(template, default, table);
        for statement in iotflow_mysql::split_script(&sql) {
            conn.query_drop(&statement)
                .await
                .map_err(|e| format!("creating alarm table {table} at {shown}: {e}"))?;
        }
    }
    drop(conn);
    let stored = load(&pool, &a.state_table, &config.kafka.group_id).await?;
    let producer: FutureProducer = iotflow_kafka::client_config(&config.kafka)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("producer of the alarms topic {}: {e}", a.topic))?;
    let partitions = if readings_topic {
        partitions_of(config)?
    } else {
        Vec::new()
    };
    let alarm_metrics = AlarmMetrics::register(metrics, metrics.job_name(), metrics.job_id());
    let board = Arc::new(Mutex::new(AlarmBoard::default()));
    metrics.add_route("/api/alarms", route(board.clone()));
    tracing::info!(
        rules = rules.len(),
        devices = stored.devices.len(),
        table = %a.table,
        topic = %a.topic,
        "alarms: rules loaded, state read"
    );
    Ok(AlarmsConnector {
        options: a.clone(),
        rules,
        group: config.kafka.group_id.clone(),
        pool,
        producer,
        stored: Arc::new(stored),
        board,
        metrics: alarm_metrics,
        write_timeout: Duration::from_millis(config.mysql.write_timeout_ms),
        retry: (&config.mysql.retry).into(),
        partitions,
    })
}

fn partitions_of(config: &Config) -> Result<Vec<i32>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let topic = &config.kafka.topic;
    let consumer: BaseConsumer = iotflow_kafka::client_config(&config.kafka)
        .create()
        .map_err(|e| format!("alarms: a client for {topic}: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .map_err(|e| format!("alarms: partitions of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    Ok(partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_spread_over_workers_stably() {
        assert_eq!(device_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(device_hash("a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[worker_of(&format!("pbox-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
    }
}
