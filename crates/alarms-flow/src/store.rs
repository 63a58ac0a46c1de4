//! Where alarms go: the alarm events to Kafka, the episodes and the checkpointed state to
//! MySQL, and the state read back at start.
//!
//! A [`Checkpoint`] is what one worker's alarm operator produced since its previous one: the
//! events, the state of every device that changed, and the worker's clock. The writer sends the
//! events to the alarms topic and waits for the broker, then writes the episodes and the state
//! in **one** MySQL transaction. So the stored state never runs ahead of the stored episodes,
//! and a restart from it produces again exactly the events that were not yet stored (the
//! episodes overwrite themselves; the topic may see an event twice, with the same `id`).

use std::time::Duration;

use iotflow_alarms::{Event, EventKind, StoredClock, StoredDevice};
use iotflow_sink::{BatchWriter, SinkError};
use mysql_async::prelude::Queryable;
use mysql_async::{Pool, TxOpts, Value};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::board::{event_id, event_json};

/// The episode table's DDL (`device_alarms` is replaced by `alarms.table`).
pub const DEVICE_ALARMS_DDL: &str = include_str!("../../../schemas/mysql/device_alarms.sql");
/// The state table's DDL (`alarm_state` is replaced by `alarms.state_table`).
pub const ALARM_STATE_DDL: &str = include_str!("../../../schemas/mysql/alarm_state.sql");

/// Rows per multi-row statement.
const CHUNK: usize = 500;

/// One worker's alarm output since its previous checkpoint.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Events, in the order the engine gave them.
    pub events: Vec<Event>,
    /// (device, its stored state as JSON) for every device that changed.
    pub devices: Vec<(String, String)>,
    /// (`worker/peers`, the worker's clock as JSON).
    pub clock: (String, String),
}

impl Checkpoint {
    fn size(&self) -> usize {
        self.events.len() * 160
            + self
                .devices
                .iter()
                .map(|(id, s)| id.len() + s.len() + 16)
                .sum::<usize>()
            + 64
    }
}

/// The state a group's previous run stored.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// Every device's state.
    pub devices: Vec<(String, StoredDevice)>,
    /// Every worker clock: (worker, peers, clock).
    pub clocks: Vec<(usize, usize, StoredClock)>,
}

/// The stored state of `group`, read from `state_table`.
pub async fn load(pool: &Pool, state_table: &str, group: &str) -> Result<Stored, String> {
    let mut conn = pool
        .get_conn()
        .await
        .map_err(|e| format!("reading the alarm state: {e}"))?;
    let rows: Vec<(String, String, String, i64)> = conn
        .exec(
            format!(
                "SELECT kind, id, state, CAST(UNIX_TIMESTAMP(updated_at) * 1000 AS SIGNED) FROM {} WHERE grp = ?",
                ident(state_table)
            ),
            (group,),
        )
        .await
        .map_err(|e| format!("reading the alarm state from {state_table}: {e}"))?;
    let mut stored = Stored::default();
    // Clocks of an earlier shape of the cluster (other worker counts) are stale once a later
    // shape wrote its own: only the shape written last counts.
    let mut clocks: Vec<(usize, usize, StoredClock, i64)> = Vec::new();
    for (kind, id, state, updated) in rows {
        match kind.as_str() {
            "device" => {
                let device: StoredDevice = serde_json::from_str(&state).map_err(|e| {
                    format!("{state_table}: the state of device `{id}` is not readable: {e}")
                })?;
                stored.devices.push((id, device));
            }
            "clock" => {
                let clock: StoredClock = serde_json::from_str(&state)
                    .map_err(|e| format!("{state_table}: the clock `{id}` is not readable: {e}"))?;
                let (w, p) = id
                    .split_once('/')
                    .and_then(|(w, p)| Some((w.parse().ok()?, p.parse().ok()?)))
                    .ok_or_else(|| format!("{state_table}: clock id `{id}` is not worker/peers"))?;
                clocks.push((w, p, clock, updated));
            }
            other => {
                return Err(format!(
                    "{state_table}: row kind `{other}` (id `{id}`) is neither device nor clock"
                ))
            }
        }
    }
    if let Some(latest) = clocks.iter().max_by_key(|c| c.3).map(|c| c.1) {
        stored.clocks = clocks
            .into_iter()
            .filter(|c| c.1 == latest)
            .map(|(w, p, c, _)| (w, p, c))
            .collect();
    }
    Ok(stored)
}

fn ident(name: &str) -> String {
    let mut s = String::new();
    iotflow_mysql::quote_identifier(name, &mut s);
    s
}

/// Event-time milliseconds as the `DATETIME(3)` the tables hold.
fn at(ms: i64) -> Value {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => Value::from(t.naive_utc()),
        None => Value::NULL,
    }
}

/// Writes checkpoints: events to Kafka, then episodes and state in one MySQL transaction.
pub struct CheckpointWriter {
    /// The pool.
    pub pool: Pool,
    /// Producer of the alarms topic.
    pub producer: FutureProducer,
    /// The alarms topic.
    pub topic: String,
    /// The episode table.
    pub table: String,
    /// The state table.
    pub state_table: String,
    /// The consumer group the state belongs to.
    pub group: String,
    /// Longest one write may take (`mysql.write_timeout_ms`).
    pub timeout: Duration,
}

impl BatchWriter for CheckpointWriter {
    type Row = Checkpoint;

    async fn write(&mut self, rows: &[Checkpoint]) -> Result<(), SinkError> {
        let what = || format!("alarm checkpoint to {}", self.table);
        iotflow_sink::within(self.timeout, "mysql.write_timeout_ms", what, async {
            self.publish(rows).await?;
            self.store(rows).await
        })
        .await
    }

    fn row_size(row: &Checkpoint) -> usize {
        row.size()
    }

    fn kafka_ts_ms(_row: &Checkpoint) -> Option<i64> {
        None
    }
}

impl CheckpointWriter {
    async fn publish(&self, rows: &[Checkpoint]) -> Result<(), SinkError> {
        let events: Vec<(&Event, String, String)> = rows
            .iter()
            .flat_map(|c| &c.events)
            .map(|e| (e, event_json(e).to_string(), event_id(e)))
            .collect();
        let mut deliveries = Vec::new();
        for (e, payload, id) in &events {
            let record = FutureRecord::to(&self.topic)
                .key(&e.pboxid)
                .payload(payload)
                .headers(
                    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                        key: "alarm-id",
                        value: Some(id.as_bytes()),
                    }),
                );
            deliveries.push(self.producer.send(record, Duration::from_secs(30)));
        }
        for d in futures_util::future::join_all(deliveries).await {
            if let Err((e, _)) = d {
                return Err(SinkError::Transient(format!(
                    "alarm event to topic {}: {e}",
                    self.topic
                )));
            }
        }
        Ok(())
    }

    async fn store(&self, rows: &[Checkpoint]) -> Result<(), SinkError> {
        let classify = |e: mysql_async::Error| {
            let message = format!("alarm checkpoint to MySQL ({}): {e}", self.table);
            if iotflow_mysql::mysql_error_is_transient(&e) {
                SinkError::Transient(message)
            } else {
                SinkError::Definite(message)
            }
        };
        let mut conn = self.pool.get_conn().await.map_err(classify)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(classify)?;
        let events: Vec<&Event> = rows.iter().flat_map(|c| &c.events).collect();
        // Raises first, then clears: a clear always follows its own raise, and another episode
        // of the same (rule, device) has another first reading, so another row.
        let raised: Vec<&&Event> = events
            .iter()
            .filter(|e| e.kind == EventKind::Raised)
            .collect();
        for chunk in raised.chunks(CHUNK) {
            let mut sql = format!(
                "INSERT INTO {} (rule_id, pboxid, first_at, severity, raised_at, raised_value, last_at) VALUES ",
                ident(&self.table)
            );
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 7);
            for (i, e) in chunk.iter().enumerate() {
                sql.push_str(if i == 0 {
                    "(?,?,?,?,?,?,?)"
                } else {
                    ",(?,?,?,?,?,?,?)"
                });
                params.extend([
                    Value::from(e.rule.as_str()),
                    Value::from(e.pboxid.as_str()),
                    at(e.first_ms),
                    Value::from(e.severity.as_str()),
                    at(e.at_ms),
                    Value::from(e.value),
                    at(e.last_ms),
                ]);
            }
            sql.push_str(
                " ON DUPLICATE KEY UPDATE severity = VALUES(severity), raised_at = VALUES(raised_at), \
                 raised_value = VALUES(raised_value), last_at = GREATEST(last_at, VALUES(last_at))",
            );
            tx.exec_drop(sql, params).await.map_err(classify)?;
        }
        let cleared: Vec<&&Event> = events
            .iter()
            .filter(|e| e.kind == EventKind::Cleared)
            .collect();
        for chunk in cleared.chunks(CHUNK) {
            // The row exists (its raise is stored, in this transaction or before); the insert
            // branch only keeps a clear whose raise was lost by hand from vanishing.
            let mut sql = format!(
                "INSERT INTO {} (rule_id, pboxid, first_at, severity, raised_at, raised_value, last_at, cleared_at, cleared_value) VALUES ",
                ident(&self.table)
            );
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
            for (i, e) in chunk.iter().enumerate() {
                sql.push_str(if i == 0 {
                    "(?,?,?,?,?,?,?,?,?)"
                } else {
                    ",(?,?,?,?,?,?,?,?,?)"
                });
                params.extend([
                    Value::from(e.rule.as_str()),
                    Value::from(e.pboxid.as_str()),
                    at(e.first_ms),
                    Value::from(e.severity.as_str()),
                    at(e.first_ms),
                    Value::from(e.value),
                    at(e.last_ms),
                    at(e.at_ms),
                    Value::from(e.value),
                ]);
            }
            sql.push_str(
                " ON DUPLICATE KEY UPDATE cleared_at = VALUES(cleared_at), \
                 cleared_value = VALUES(cleared_value), last_at = GREATEST(last_at, VALUES(last_at))",
            );
            tx.exec_drop(sql, params).await.map_err(classify)?;
        }
        // The newest state of each device across the batch (later checkpoints win).
        let mut devices: std::collections::BTreeMap<&str, &str> = Default::default();
        let mut clocks: std::collections::BTreeMap<&str, &str> = Default::default();
        for c in rows {
            for (id, state) in &c.devices {
                devices.insert(id, state);
            }
            clocks.insert(&c.clock.0, &c.clock.1);
        }
        let state: Vec<(&str, &str, &str)> = devices
            .into_iter()
            .map(|(id, s)| ("device", id, s))
            .chain(clocks.into_iter().map(|(id, s)| ("clock", id, s)))
            .collect();
        for chunk in state.chunks(CHUNK) {
            let mut sql = format!(
                "INSERT INTO {} (grp, kind, id, state) VALUES ",
                ident(&self.state_table)
            );
            let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 4);
            for (i, (kind, id, s)) in chunk.iter().enumerate() {
                sql.push_str(if i == 0 { "(?,?,?,?)" } else { ",(?,?,?,?)" });
                params.extend([
                    Value::from(self.group.as_str()),
                    Value::from(*kind),
                    Value::from(*id),
                    Value::from(*s),
                ]);
            }
            sql.push_str(" ON DUPLICATE KEY UPDATE state = VALUES(state)");
            tx.exec_drop(sql, params).await.map_err(classify)?;
        }
        tx.commit().await.map_err(classify)
    }
}
