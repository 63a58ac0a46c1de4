//! `iotflow publish-devices`: the device business table in MySQL → the broadcast topic.
//!
//! Change capture is a transactional outbox (see `schemas/mysql/device_info.sql` and
//! `docs/devices.md`): triggers on `device_info` write one row per insert, update and delete
//! into `device_info_changes`, in the transaction of the change. The publisher
//!
//! 1. takes a MariaDB named lock, so exactly one publisher of a database is active (others
//!    wait as standbys);
//! 2. publishes a full snapshot of `device_info`, keyed by `pboxid`;
//! 3. then, round after round, reads the oldest outbox rows joined with the device's *current*
//!    record, publishes that record (or a tombstone when the device no longer exists) for
//!    each, waits for the broker's acknowledgement of all of them, and only then deletes those
//!    outbox rows.
//!
//! Nothing is lost: a change is in the outbox from its commit until the broker has the device's
//! state as of a moment after that commit. A crash or a MySQL or broker outage between the
//! publish and the delete publishes the same current state again, which an upsert topic absorbs.
//! Per device nothing is reordered: the producer is idempotent (retries keep the order within a
//! partition), all records of a device share a key and so a partition, and every record
//! published is the device's state at the time it was read, which never goes backwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use iotflow_config::Config;
use iotflow_metrics::{Metrics, PublisherMetrics, RateLimitedLog};
use iotflow_model::{Decimal, DeviceInfo};
use iotflow_mysql::{connect, split_script};
use iotflow_sink::{backoff, RetryPolicy};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

/// The schema the publisher works on: `device_info`, `device_info_changes` and the triggers.
pub const DEVICE_INFO_DDL: &str = include_str!("../../../schemas/mysql/device_info.sql");

/// The alarm rules table, its outbox and triggers (published when `alarms.rules_topic` is set).
pub const ALARM_RULES_DDL: &str = include_str!("../../../schemas/mysql/alarm_rules.sql");

/// Creates the tables and triggers when missing.
pub async fn create_schema(pool: &Pool) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    for statement in split_script(DEVICE_INFO_DDL)
        .into_iter()
        .chain(split_script(ALARM_RULES_DDL))
    {
        conn.query_drop(&statement)
            .await
            .with_context(|| format!("creating the device schema: {}", first_line(&statement)))?;
    }
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Inserts or replaces `devices` in `device_info` (the simulator's sample data; the triggers
/// record each change).
pub async fn upsert_devices(pool: &Pool, devices: &[DeviceInfo]) -> anyhow::Result<()> {
    let mut conn = pool.get_conn().await?;
    for chunk in devices.chunks(500) {
        let mut sql = String::from(
            "INSERT INTO device_info (pboxid, company, site, line, device_name, model, status, work_threshold) VALUES ",
        );
        let mut params: Vec<mysql_async::Value> = Vec::new();
        for (i, d) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?,?,?,?,?,?)");
            params.push(d.pboxid.clone().into());
            for v in [
                &d.company,
                &d.site,
                &d.line,
                &d.device_name,
                &d.model,
                &d.status,
            ] {
                params.push(v.clone().into());
            }
            params.push(d.work_threshold.map(|t| t.to_string()).into());
        }
        sql.push_str(
            " ON DUPLICATE KEY UPDATE company = VALUES(company), site = VALUES(site), line = VALUES(line), \
             device_name = VALUES(device_name), model = VALUES(model), status = VALUES(status), \
             work_threshold = VALUES(work_threshold)",
        );
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Columns read for a device, in this order, by [`device_from_row`].
const DEVICE_COLUMNS: &str =
    "d.pboxid, d.company, d.site, d.line, d.device_name, d.model, d.status, \
     CAST(d.work_threshold AS CHAR), CAST(d.updated_at AS CHAR)";

fn device_from_row(row: &mut mysql_async::Row, at: usize) -> anyhow::Result<Option<DeviceInfo>> {
    let text = |row: &mut mysql_async::Row, i: usize| -> Option<String> {
        row.take::<Option<String>, _>(at + i).flatten()
    };
    let Some(pboxid) = text(row, 0) else {
        return Ok(None);
    };
    let threshold = text(row, 7)
        .map(|t| {
            t.parse::<Decimal>()
                .with_context(|| format!("device {pboxid}: work_threshold `{t}`"))
        })
        .transpose()?;
    Ok(Some(DeviceInfo {
        company: text(row, 1),
        site: text(row, 2),
        line: text(row, 3),
        device_name: text(row, 4),
        model: text(row, 5),
        status: text(row, 6),
        work_threshold: threshold.map(|t| t.normalize()),
        updated_at: text(row, 8),
        pboxid,
    }))
}

/// One record for the broadcast topic: the device's state, `None` for a tombstone.
#[derive(Debug)]
struct Outgoing {
    pboxid: String,
    state: Option<DeviceInfo>,
}

/// The broadcast-topic producer.
struct Publisher {
    producer: FutureProducer,
    kafka: iotflow_config::KafkaConfig,
    topic: String,
    metrics: PublisherMetrics,
}

/// An idempotent producer: retries never reorder records within a partition.
fn producer(kafka: &iotflow_config::KafkaConfig) -> anyhow::Result<FutureProducer> {
    iotflow_kafka::client_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .with_context(|| format!("creating a producer for {}", kafka.brokers))
}

impl Publisher {
    /// After a failed round: a new producer. An idempotent producer whose broker lost its state
    /// (a broker restart without storage, a cluster rebuilt) raises a fatal error and refuses
    /// every later record; a fresh one starts a new producer session. The unacknowledged
    /// records are sent again by the next round anyway.
    fn renew(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::warn!(
                "the producer hit a fatal error ({code:?}: {reason}): starting a new one"
            );
        }
        match producer(&self.kafka) {
            Ok(p) => self.producer = p,
            Err(e) => tracing::warn!("cannot start a new producer: {e:#}"),
        }
    }

    /// Sends `records` in order and waits until the broker acknowledged every one.
    async fn publish(&self, records: &[Outgoing]) -> anyhow::Result<()> {
        let mut pending: Vec<(DeliveryFuture, bool)> = Vec::with_capacity(records.len());
        for r in records {
            let payload = r.state.as_ref().map(DeviceInfo::to_json);
            loop {
                let mut record = FutureRecord::<str, str>::to(&self.topic).key(&r.pboxid);
                if let Some(p) = &payload {
                    record = record.payload(p);
                }
                match self.producer.send_result(record) {
                    Ok(f) => {
                        pending.push((f, payload.is_some()));
                        break;
                    }
                    Err((
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull,
                        ),
                        _,
                    )) => {
                        // Let the queue drain, then enqueue again.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err((e, _)) => bail!("publishing device {} to {}: {e}", r.pboxid, self.topic),
                }
            }
        }
        for (f, upsert) in pending {
            match f.await {
                Ok(Ok(_)) => {
                    if upsert {
                        self.metrics.upserts.inc();
                    } else {
                        self.metrics.tombstones.inc();
                    }
                }
                Ok(Err((e, _))) => {
                    bail!("the broker refused a device record for {}: {e}", self.topic)
                }
                Err(_) => bail!("the producer of {} stopped", self.topic),
            }
        }
        Ok(())
    }
}

/// Holds the publisher's MariaDB named lock on a connection of its own.
struct Leadership {
    conn: Conn,
    name: String,
}

impl Leadership {
    /// Waits until this publisher holds the lock (another active publisher makes this one a
    /// standby), or `stop` is set.
    async fn acquire(pool: &Pool, stop: &AtomicBool) -> anyhow::Result<Option<Leadership>> {
        let mut conn = pool.get_conn().await?;
        let db: Option<String> = conn.query_first("SELECT DATABASE()").await?;
        let name = format!("iotflow-publish-devices-{}", db.unwrap_or_default());
        let mut told = false;
        loop {
            let got: Option<Option<i64>> = conn
                .exec_first("SELECT GET_LOCK(?, 1)", (name.as_str(),))
                .await?;
            if got.flatten() == Some(1) {
                if told {
                    tracing::info!("the other publisher is gone: taking over");
                }
                return Ok(Some(Leadership { conn, name }));
            }
            if !told {
                tracing::info!(lock = %name, "another publisher is active on this database: standing by");
                told = true;
            }
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
        }
    }

    /// Gives the lock up by closing its connection (a lock lost with a dead connection is
    /// already gone; a live one must not stay behind in the pool holding it).
    async fn release(self) {
        let _ = self.conn.disconnect().await;
    }

    /// Whether the lock is still ours (it goes with the connection: a MySQL restart, a `KILL`,
    /// the server's `wait_timeout`). Any error counts as not held: a lock connection that
    /// cannot answer has lost its lock, or soon will, and another publisher may hold it.
    async fn held(&mut self) -> bool {
        let mine = tokio::time::timeout(
            Self::CHECK_TIMEOUT,
            self.conn.exec_first::<Option<i64>, _, _>(
                "SELECT IS_USED_LOCK(?) = CONNECTION_ID()",
                (self.name.as_str(),),
            ),
        )
        .await;
        matches!(mine, Ok(Ok(Some(Some(1)))))
    }

    /// Longest [`Leadership::held`] waits for its answer (a server that stopped answering
    /// must not stall the publisher in the check; no answer counts as not held).
    const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks the lock before a round: [`Leadership::held`], with a warning when it is gone.
    /// The caller then stops publishing, releases and goes back to acquiring the lock (as a
    /// standby if another publisher took it). One query on the lock connection, which also
    /// keeps that connection from ever idling into `wait_timeout` while this publisher leads.
    async fn still_held(&mut self) -> bool {
        if self.held().await {
            return true;
        }
        tracing::warn!(
            lock = %self.name,
            "lost the publisher lock (its MySQL connection was closed or killed): no longer publishing; taking it again, or standing by if another publisher has it"
        );
        false
    }
}

/// Publishes every device in `device_info`; returns how many.
async fn snapshot(pool: &Pool, publisher: &Publisher) -> anyhow::Result<usize> {
    let mut conn = pool.get_conn().await?;
    let mut rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT {DEVICE_COLUMNS} FROM device_info d ORDER BY d.pboxid"
        ))
        .await
        .context("reading device_info")?;
    drop(conn);
    let mut out = Vec::with_capacity(rows.len());
    for row in &mut rows {
        if let Some(d) = device_from_row(row, 0)? {
            out.push(Outgoing {
                pboxid: d.pboxid.clone(),
                state: Some(d),
            });
        }
    }
    publisher.publish(&out).await?;
    Ok(out.len())
}

/// One round: publishes the current state of the devices of the oldest `limit` changes and
/// deletes those changes. Returns how many changes it handled.
async fn drain_once(pool: &Pool, publisher: &Publisher, limit: usize) -> anyhow::Result<usize> {
    let mut conn = pool.get_conn().await?;
    let mut rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT c.id, c.pboxid, TIMESTAMPDIFF(MICROSECOND, c.changed_at, NOW(3)), {DEVICE_COLUMNS} \
             FROM device_info_changes c LEFT JOIN device_info d ON d.pboxid = c.pboxid \
             ORDER BY c.id LIMIT {limit}"
        ))
        .await
        .context("reading device_info_changes")?;
    if rows.is_empty() {
        publisher.metrics.backlog.set(0);
        publisher.metrics.lag_seconds.set(0.0);
        return Ok(0);
    }
    let started = Instant::now();
    let mut ids = Vec::with_capacity(rows.len());
    let mut oldest_us = 0i64;
    let mut out = Vec::with_capacity(rows.len());
    for row in &mut rows {
        let id: u64 = row.take(0).context("change id")?;
        let pboxid: String = row.take(1).context("change pboxid")?;
        let age_us: Option<i64> = row.take(2);
        oldest_us = oldest_us.max(age_us.unwrap_or(0));
        ids.push(id);
        out.push(Outgoing {
            state: device_from_row(row, 3)?,
            pboxid,
        });
    }
    publisher.publish(&out).await?;
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    conn.query_drop(format!(
        "DELETE FROM device_info_changes WHERE id IN ({list})"
    ))
    .await
    .context("deleting published changes")?;
    let left: Option<u64> = conn
        .query_first("SELECT COUNT(*) FROM device_info_changes")
        .await?;
    publisher.metrics.backlog.set(left.unwrap_or(0) as i64);
    publisher
        .metrics
        .lag_seconds
        .set(oldest_us as f64 / 1e6 + started.elapsed().as_secs_f64());
    tracing::debug!(changes = ids.len(), "published device changes");
    Ok(ids.len())
}

/// Columns of `alarm_rules` read for a rule, in this order, by [`rule_from_row`].
const RULE_COLUMNS: &str =
    "id, `when`, CAST(value AS CHAR), CAST(low AS CHAR), CAST(high AS CHAR), \
     after_secs, for_ms, CAST(hysteresis AS CHAR), severity, device, model, site, device_threshold, \
     area";

fn rule_from_row(mut row: mysql_async::Row) -> anyhow::Result<iotflow_config::AlarmRuleConfig> {
    let text = |row: &mut mysql_async::Row, i: usize| -> Option<String> {
        row.take::<Option<String>, _>(i).flatten()
    };
    let exact = |v: Option<String>| {
        v.map(|v| {
            // DECIMAL(24, 8) comes as `80.00000000`: the same number, written short.
            iotflow_config::Exact(
                v.parse::<Decimal>()
                    .map(|d| d.normalize().to_string())
                    .unwrap_or(v),
            )
        })
    };
    let id = text(&mut row, 0).context("alarm_rules: a rule without an id")?;
    let after_secs: Option<u64> = row.take::<Option<u64>, _>(5).flatten();
    let for_ms: Option<u64> = row.take::<Option<u64>, _>(6).flatten();
    let device_threshold: Option<bool> = row.take::<Option<bool>, _>(12).flatten();
    // An area that is not JSON rings must not stop the publisher (device records go out in
    // the same rounds): the rule goes out without it, and the job refuses the whole set,
    // keeping the rules in effect, with "needs `area`" naming the rule.
    let area = match text(&mut row, 13).filter(|a| !a.trim().is_empty()) {
        None => None,
        Some(json) => match serde_json::from_str::<Vec<Vec<[f64; 2]>>>(&json) {
            Ok(rings) => Some(rings),
            Err(e) => {
                tracing::error!(
                    rule = %id,
                    "alarm_rules: area is not GeoJSON polygon coordinates \
                     ([[[lon, lat], ...], ...hole rings]): {e}; published without it"
                );
                None
            }
        },
    };
    Ok(iotflow_config::AlarmRuleConfig {
        area,
        when: text(&mut row, 1).unwrap_or_default(),
        value: exact(text(&mut row, 2)),
        low: exact(text(&mut row, 3)),
        high: exact(text(&mut row, 4)),
        after_secs,
        for_secs: None,
        for_ms: for_ms.filter(|ms| *ms > 0),
        hysteresis: exact(text(&mut row, 7)).filter(|h| h.0 != "0"),
        severity: text(&mut row, 8),
        device: text(&mut row, 9),
        model: text(&mut row, 10),
        site: text(&mut row, 11),
        device_threshold: device_threshold.unwrap_or(false),
        id,
    })
}

/// Reads the enabled rules of `alarm_rules`, in id order.
async fn read_rules(conn: &mut Conn) -> anyhow::Result<Vec<iotflow_config::AlarmRuleConfig>> {
    let rows: Vec<mysql_async::Row> = conn
        .query(format!(
            "SELECT {RULE_COLUMNS} FROM alarm_rules WHERE enabled ORDER BY id"
        ))
        .await
        .context("reading alarm_rules")?;
    rows.into_iter().map(rule_from_row).collect()
}

/// `TIMESTAMPDIFF` from the epoch: a `DATETIME` as milliseconds of its naive time read as UTC,
/// as readings' event times are, whatever the session's time zone.
const EPOCH_MS: &str = "TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {}) DIV 1000";

/// Publishes the rule set to `topic` (key `rules`) and waits for the broker.
async fn publish_rules(
    publisher: &Publisher,
    topic: &str,
    set: &iotflow_config::RuleSet,
) -> anyhow::Result<()> {
    let payload = serde_json::to_string(set).context("encoding the rule set")?;
    let record = FutureRecord::<str, str>::to(topic)
        .key("rules")
        .payload(&payload);
    match publisher
        .producer
        .send(record, Duration::from_secs(30))
        .await
    {
        Ok(_) => Ok(()),
        Err((e, _)) => bail!("publishing the alarm rules to {topic}: {e}"),
    }
}

/// At the start: the current rule set, from the latest time a rule was changed (a set the job
/// already has changes nothing there).
async fn rules_snapshot(pool: &Pool, publisher: &Publisher, topic: &str) -> anyhow::Result<usize> {
    let mut conn = pool.get_conn().await?;
    let since: Option<i64> = conn
        .query_first(format!(
            "SELECT {} FROM alarm_rules",
            EPOCH_MS.replace(
                "{}",
                "COALESCE(MAX(COALESCE(effective_from, updated_at)), '1970-01-01')"
            )
        ))
        .await
        .context("reading alarm_rules")?;
    let rules = read_rules(&mut conn).await?;
    drop(conn);
    let n = rules.len();
    let set = iotflow_config::RuleSet {
        effective_ms: since.unwrap_or(0),
        version: 0,
        rules,
    };
    publish_rules(publisher, topic, &set).await?;
    Ok(n)
}

/// One round of rule changes: when the outbox has rows, publishes the whole set from the
/// latest of their times, then deletes the rows it covered. Returns how many rows.
async fn rules_once(pool: &Pool, publisher: &Publisher, topic: &str) -> anyhow::Result<usize> {
    let mut conn = pool.get_conn().await?;
    let pending: Option<(Option<u64>, Option<i64>, u64)> = conn
        .query_first(format!(
            "SELECT MAX(id), {}, COUNT(*) FROM alarm_rules_changes",
            EPOCH_MS.replace("{}", "MAX(effective_at)")
        ))
        .await
        .context("reading alarm_rules_changes")?;
    let Some((Some(version), Some(effective_ms), count)) = pending else {
        return Ok(0);
    };
    // Read after the outbox: the set holds at least every change up to `version`.
    let rules = read_rules(&mut conn).await?;
    let set = iotflow_config::RuleSet {
        effective_ms,
        version,
        rules,
    };
    publish_rules(publisher, topic, &set).await?;
    conn.exec_drop("DELETE FROM alarm_rules_changes WHERE id <= ?", (version,))
        .await
        .context("deleting published rule changes")?;
    tracing::info!(
        version,
        rules = set.rules.len(),
        effective_ms,
        topic,
        "published the alarm rules"
    );
    Ok(count as usize)
}

/// How the publisher runs.
#[derive(Clone, Debug, Default)]
pub struct PublishArgs {
    /// Publish the snapshot and every change waiting, then exit.
    pub once: bool,
}

/// Runs the publisher until SIGTERM / Ctrl-C (or, with `once`, until no change is waiting).
pub fn run(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("iotflow-publisher")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run_async(config, args))
}

async fn run_async(config: Config, args: PublishArgs) -> anyhow::Result<()> {
    let p = &config.publisher;
    // First thing: a SIGTERM during the pre-flight checks is a stop request, not a kill.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let terminated = iotflow_metrics::signals::terminated();
        tokio::spawn(async move {
            terminated.await;
            tracing::info!("stop requested: finishing the current round");
            stop.store(true, Ordering::SeqCst);
        });
    }

    let job_id = iotflow_metrics::new_job_id();
    let metrics = Arc::new(Metrics::new("publish-devices", &job_id));
    if !p.metrics_listen.is_empty() {
        let server = iotflow_metrics::serve(&p.metrics_listen, metrics.clone())?;
        tracing::info!("metrics at http://{}/metrics", server.addr);
    }
    let url = if p.mysql_url.is_empty() {
        &config.mysql.url
    } else {
        &p.mysql_url
    };
    let pool = connect(url, Duration::from_secs(10))
        .await
        .context("device publisher pre-flight check failed")?;
    if p.create_schema {
        create_schema(&pool).await?;
    }
    let mut publisher = Publisher {
        producer: producer(&config.kafka)?,
        kafka: config.kafka.clone(),
        topic: config.kafka.broadcast_topic.clone(),
        metrics: metrics.publisher(),
    };

    let poll = Duration::from_millis(p.poll_interval_ms);
    let rules_topic = config.alarms.rules_topic.as_str();
    let mut failures = 0u32;
    let mut log = RateLimitedLog::new(Duration::from_secs(10));
    'leader: while !stop.load(Ordering::SeqCst) {
        let mut lead = match Leadership::acquire(&pool, &stop).await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                failed(
                    &mut log,
                    &publisher,
                    format!("cannot take the publisher lock: {e:#}"),
                );
                tokio::time::sleep(next_backoff(&mut failures)).await;
                continue;
            }
        };
        // The snapshot, retried while the lock is ours.
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'leader;
            }
            if !lead.still_held().await {
                lead.release().await;
                continue 'leader;
            }
            let rules = async {
                if rules_topic.is_empty() {
                    return Ok(None);
                }
                rules_snapshot(&pool, &publisher, rules_topic)
                    .await
                    .map(Some)
            };
            match async {
                Ok::<_, anyhow::Error>((snapshot(&pool, &publisher).await?, rules.await?))
            }
            .await
            {
                Ok((n, rules)) => {
                    publisher.metrics.snapshot_devices.set(n as i64);
                    tracing::info!(devices = n, topic = %publisher.topic, "published the device snapshot");
                    if let Some(r) = rules {
                        tracing::info!(rules = r, topic = %rules_topic, "published the alarm rules");
                    }
                    break;
                }
                Err(e) => {
                    failed(
                        &mut log,
                        &publisher,
                        format!("snapshot failed, retrying: {e:#}"),
                    );
                    tokio::time::sleep(next_backoff(&mut failures)).await;
                    publisher.renew();
                }
            }
        }
        loop {
            if stop.load(Ordering::SeqCst) {
                break 'leader;
            }
            // Before every round, not only after a failed one: rounds read and write through
            // other connections of the pool, so they keep succeeding after the lock connection
            // is gone (killed, or closed by the server's wait_timeout) and a standby has taken
            // the lock. Publishing then would put two publishers on the topic.
            if !lead.still_held().await {
                lead.release().await;
                continue 'leader;
            }
            let round = async {
                let rules = if rules_topic.is_empty() {
                    0
                } else {
                    rules_once(&pool, &publisher, rules_topic).await?
                };
                Ok::<_, anyhow::Error>(drain_once(&pool, &publisher, p.batch_rows).await? + rules)
            };
            match round.await {
                Ok(0) => {
                    failures = 0;
                    if args.once {
                        break 'leader;
                    }
                    tokio::time::sleep(poll).await;
                }
                Ok(_) => failures = 0,
                Err(e) => {
                    failed(
                        &mut log,
                        &publisher,
                        format!("publishing changes failed, retrying: {e:#}"),
                    );
                    tokio::time::sleep(next_backoff(&mut failures)).await;
                    publisher.renew();
                }
            }
        }
    }
    let _ = publisher.producer.flush(Duration::from_secs(10));
    pool.disconnect().await.ok();
    tracing::info!("device publisher stopped");
    Ok(())
}

/// Backoff between failed rounds: from 100 ms, doubling to 5 s, with full jitter
/// ([`iotflow_sink::backoff`]).
fn retry_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
    }
}

/// A failed round: counted every time, logged at most every 10 s.
fn failed(log: &mut RateLimitedLog, publisher: &Publisher, message: String) {
    publisher.metrics.errors.inc();
    log.warn(|| message);
}

/// The wait before the next attempt after `failures` failures in a row; counts this one.
fn next_backoff(failures: &mut u32) -> Duration {
    let d = backoff(&retry_policy(), *failures);
    *failures = failures.saturating_add(1);
    d
}

/// The topic's device records as the job would rebuild them: last record per key wins, a
/// tombstone removes. For tests and `iotflow` diagnostics.
pub fn fold_records(records: &[(String, Option<Vec<u8>>)]) -> BTreeMap<String, DeviceInfo> {
    let mut state = BTreeMap::new();
    for (key, payload) in records {
        match iotflow_model::parse_device_record(Some(key.as_bytes()), payload.as_deref()) {
            Ok(iotflow_model::DeviceChange::Upsert(d)) => {
                state.insert(d.pboxid.clone(), d);
            }
            Ok(iotflow_model::DeviceChange::Delete(id)) => {
                state.remove(&id);
            }
            Err(_) => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_script_splits_into_its_statements() {
        // The splitter is iotflow_mysql's (tested there); this is the publisher's own script.
        let s = split_script(DEVICE_INFO_DDL);
        assert_eq!(s.len(), 5, "{s:#?}");
        assert!(s[0].starts_with("CREATE TABLE IF NOT EXISTS device_info ("));
    }

    #[test]
    fn waits_between_failed_rounds_grow_and_cap() {
        // Full jitter: every wait lies in its window, 100 ms doubling, capped at 5 s.
        let mut f = 0;
        for window in [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000] {
            let d = next_backoff(&mut f).as_millis();
            assert!((1..=window).contains(&d), "{d} ms outside 1..={window}");
        }
        assert_eq!(f, 9);
    }
}
