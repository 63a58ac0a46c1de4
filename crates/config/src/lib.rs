//! iotflow configuration: serde structs with documented defaults, layered as
//! defaults → TOML file → `IOTFLOW__SECTION__KEY` environment variables → CLI flags.
//!
//! Every struct denies unknown fields, so a typo (`brokerz = ...`, or
//! `IOTFLOW__KAFKA__BROKERZ`) is an error naming the key instead of a silently ignored setting.
//! `deploy/iotflow.example.toml` is the documented example; a test keeps it loadable and equal to
//! the defaults.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod alarms;
pub use alarms::{AlarmRuleConfig, AlarmsConfig, Exact, RuleSet};
mod mqtt;
pub use mqtt::{MqttConfig, DEVICE_ID_LEVEL};
mod rollups;
pub use rollups::RollupsConfig;

/// Everything the streaming job reads from its configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Job identity and dataflow pacing.
    pub job: JobConfig,
    /// Kafka connection and topics.
    pub kafka: KafkaConfig,
    /// Reading parser settings.
    pub parse: ParseConfig,
    /// MySQL / MariaDB sink.
    pub mysql: MysqlConfig,
    /// ClickHouse sink.
    pub clickhouse: ClickhouseConfig,
    /// Elasticsearch sink.
    pub elasticsearch: ElasticsearchConfig,
    /// The device publisher (`iotflow publish-devices`).
    pub publisher: PublisherConfig,
    /// The work-time analysis (`iotflow worktime`).
    pub worktime: WorktimeConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Device alarms (`[alarms]`, `[[alarms.rules]]`).
    pub alarms: AlarmsConfig,
    /// The MQTT bridge (`iotflow mqtt-bridge`).
    pub mqtt: MqttConfig,
    /// Rollups, heat-map tiles and day tracks kept by the MySQL sink.
    pub rollups: RollupsConfig,
}

/// Job identity and dataflow pacing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    /// Job name: the `job_name` label of every metric. Default `iotflow-stream`.
    pub name: String,
    /// Job id: the `job_id` label. Empty (the default) means one is generated at start.
    pub id: String,
    /// Length of one timely epoch in milliseconds. Records read within one epoch share a
    /// timestamp, and a reading is enriched once the dimension has passed its epoch, so the
    /// epoch bounds the latency the join adds. Default 10.
    pub epoch_ms: u64,
    /// Least time between two offset commits of one source, in milliseconds: each commit
    /// takes the newest completed epoch's offsets. It bounds what a crash replays (written
    /// again idempotently), not latency. Draining commits at once. Default 1000.
    pub commit_interval_ms: u64,
    /// Stop after this many seconds without new input (0 = run forever, the default). For tests
    /// and batch-style replays. Only time in which the broker had nothing to give counts: a
    /// source paused by slow sinks is never idle.
    pub idle_exit_secs: u64,
    /// Readings waiting for the device dimension (and dead letters awaiting the broker) a
    /// worker may hold before its source pauses, counted apart from its sinks' rows: the
    /// enrichment stash normally holds one epoch of readings, more while the dimension loads
    /// or lags. Default 50000 (at 10 ms epochs, room for the dimension to lag 50 ms behind
    /// 100 000 readings/s per worker).
    pub max_stashed_readings: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            name: "iotflow-stream".into(),
            id: String::new(),
            epoch_ms: 10,
            commit_interval_ms: 1000,
            idle_exit_secs: 0,
            max_stashed_readings: 50_000,
        }
    }
}

/// Kafka connection and topics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma separated. Default `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic of JSON readings. Default `iot-topic`.
    pub topic: String,
    /// Topic of device business records, keyed by `pboxid`. Default `iot-broadcast`.
    pub broadcast_topic: String,
    /// Dead-letter topic for records that fail to parse. Default `iot-dlq`.
    pub dlq_topic: String,
    /// Consumer group id under which offsets are committed. Default `iotflow`.
    pub group_id: String,
    /// Most messages one worker takes from Kafka per activation. Default 5000.
    pub max_poll_records: usize,
    /// Payload bytes kept in a dead letter; longer payloads are truncated and flagged.
    /// Default 65536.
    pub dlq_max_payload_bytes: usize,
    /// Seconds between librdkafka statistics (consumer lag metrics). Default 5.
    pub stats_interval_secs: u64,
    /// Most KiB of fetched messages librdkafka queues ahead per source partition
    /// (`queued.max.messages.kbytes`; librdkafka's own default is 65536). Default 4096: in a
    /// 2 M-reading drain (2 workers, 8 partitions) 4096 read as fast as 16384 with 40 % less
    /// RSS (340 MiB against 570 MiB); 2048 was 1.5× slower, 1024 2.5×.
    pub fetch_queue_max_kbytes: usize,
    /// Longest time in ms the broker may hold a fetch request of a source before answering
    /// (`fetch.wait.max.ms`). Some brokers hold every fetch this long even when data is there,
    /// so it bounds the latency a fetch adds. Default 100.
    pub fetch_wait_max_ms: u64,
    /// Seconds between checks of the source topics' partition counts: partitions added to a
    /// topic while the job runs are read from then on, by the worker the assignment gives them
    /// to, without a restart. 0 turns the checks off. Default 10.
    pub metadata_refresh_secs: u64,
    /// Extra librdkafka properties applied to every client (e.g. `security.protocol`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            topic: "iot-topic".into(),
            broadcast_topic: "iot-broadcast".into(),
            dlq_topic: "iot-dlq".into(),
            group_id: "iotflow".into(),
            max_poll_records: 5000,
            dlq_max_payload_bytes: 64 * 1024,
            stats_interval_secs: 5,
            fetch_queue_max_kbytes: 4 * 1024,
            fetch_wait_max_ms: 100,
            metadata_refresh_secs: 10,
            properties: BTreeMap::new(),
        }
    }
}

/// Reading parser settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParseConfig {
    /// Zone RFC 3339 event times are converted to: `UTC` (default), `+08:00`, `Asia/Shanghai`.
    pub time_zone: String,
    /// Payloads larger than this many bytes are dead-lettered unparsed. Default 65536.
    pub max_message_bytes: usize,
    /// Earliest accepted event year. Default 1970.
    pub min_year: i32,
    /// Latest accepted event year. Default 2099.
    pub max_year: i32,
    /// Plausibility window: readings whose `event_time` is more than this many seconds older
    /// than the record's Kafka timestamp (wall clock if it has none) are dead-lettered with
    /// reason `out_of_window`, so a broken clock or a very old store-and-forward backlog
    /// cannot create a partition or index per day. Default 2592000 (30 days); 0 = no limit.
    pub max_event_age_secs: u64,
    /// Readings whose `event_time` is more than this many seconds after the record's Kafka
    /// timestamp are dead-lettered the same way. Default 86400 (1 day); 0 = no limit.
    pub max_event_lead_secs: u64,
}

impl Default for ParseConfig {
    fn default() -> Self {
        ParseConfig {
            time_zone: "UTC".into(),
            max_message_bytes: 64 * 1024,
            min_year: 1970,
            max_year: 2099,
            max_event_age_secs: 30 * 86_400,
            max_event_lead_secs: 86_400,
        }
    }
}

/// MySQL / MariaDB sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MysqlConfig {
    /// Write readings to MySQL. Default true.
    pub enabled: bool,
    /// Connection URL. Default `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow`.
    pub url: String,
    /// Target table. Default `iot_data`.
    pub table: String,
    /// Create the table (from `schemas/mysql/iot_data.sql`) at start if it is missing. Default true.
    pub create_table: bool,
    /// Longest one batch write (a connection, the day partitions, the INSERT) may take, in
    /// milliseconds. A write still unanswered then is abandoned and counted as a transient
    /// error, and the batch is retried with backoff: a hung server or a table lock held
    /// elsewhere shows up in the log and metrics instead of stalling silently. Default 30000.
    pub write_timeout_ms: u64,
    /// How batches reach the table: `load_data` (`LOAD DATA LOCAL INFILE ... IGNORE` of the
    /// batch as tab-separated text, in a transaction committed only when every warning is a
    /// duplicate key; needs `local_infile=ON` on the server) or `insert` (multi-row
    /// `INSERT ... ON DUPLICATE KEY UPDATE`). Both keep the first write of a row. Default
    /// `load_data`.
    pub write_method: MysqlWriteMethod,
    /// Connections each worker's sink writes on at once: a batch is cut into up to this many
    /// parts written concurrently (parts under 250 rows are not cut further), and acknowledged
    /// when all of them are durable. 1 to 16. Default 1.
    pub connections_per_worker: usize,
    /// Batching policy.
    pub batch: BatchConfig,
    /// Retry policy for transient errors.
    pub retry: RetryConfig,
}

/// How the ClickHouse sink compresses inserts (`clickhouse.compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClickhouseCompression {
    /// LZ4 blocks, as ClickHouse's native clients send them.
    #[default]
    Lz4,
    /// Plain RowBinary.
    None,
}

/// How the MySQL sink writes a batch (`mysql.write_method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MysqlWriteMethod {
    /// `LOAD DATA LOCAL INFILE ... IGNORE INTO TABLE`, checked with `SHOW WARNINGS`.
    #[default]
    LoadData,
    /// Multi-row `INSERT ... ON DUPLICATE KEY UPDATE src_offset = src_offset`.
    Insert,
}

impl MysqlWriteMethod {
    /// The name as written in the configuration (`load_data`, `insert`).
    pub fn as_str(self) -> &'static str {
        match self {
            MysqlWriteMethod::LoadData => "load_data",
            MysqlWriteMethod::Insert => "insert",
        }
    }
}

/// Largest `mysql.connections_per_worker`.
pub const MAX_MYSQL_CONNECTIONS_PER_WORKER: usize = 16;

impl Default for MysqlConfig {
    fn default() -> Self {
        MysqlConfig {
            enabled: true,
            url: "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow".into(),
            table: "iot_data".into(),
            create_table: true,
            write_timeout_ms: 30_000,
            write_method: MysqlWriteMethod::LoadData,
            connections_per_worker: 1,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
        }
    }
}

/// ClickHouse sink (off by default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickhouseConfig {
    /// Write readings to ClickHouse. Default false.
    pub enabled: bool,
    /// HTTP interface URL. Default `http://127.0.0.1:8123`.
    pub url: String,
    /// User. Default `default`.
    pub user: String,
    /// Password (prefer the `IOTFLOW__CLICKHOUSE__PASSWORD` environment variable). Default empty.
    pub password: String,
    /// Database. Default `default`.
    pub database: String,
    /// Target table. Default `iot_data`.
    pub table: String,
    /// Create the table (from `schemas/clickhouse/iot_data.sql`) at start if it is missing.
    /// Default true.
    pub create_table: bool,
    /// Longest one batch insert may take until the server's answer, in milliseconds. An insert
    /// still unanswered then is abandoned and counted as a transient error, and the batch is
    /// retried with backoff (a hung server shows up in the log and metrics instead of stalling
    /// silently). Default 30000.
    pub write_timeout_ms: u64,
    /// How inserts are compressed on the wire: `lz4` (the default; less traffic to a remote
    /// server) or `none` (no compression work on either side, for a server on the same host).
    pub compression: ClickhouseCompression,
    /// Batching policy: ClickHouse wants few large inserts. Defaults 50000 rows, 32 MiB,
    /// 1000 ms, 2 in flight.
    pub batch: BatchConfig,
    /// Retry policy for transient errors.
    pub retry: RetryConfig,
}

impl Default for ClickhouseConfig {
    fn default() -> Self {
        ClickhouseConfig {
            enabled: false,
            url: "http://127.0.0.1:8123".into(),
            user: "default".into(),
            password: String::new(),
            database: "default".into(),
            table: "iot_data".into(),
            create_table: true,
            write_timeout_ms: 30_000,
            compression: ClickhouseCompression::Lz4,
            batch: BatchConfig {
                max_rows: 50_000,
                max_bytes: 32 << 20,
                max_delay_ms: 1000,
                linger_ms: 50,
                max_in_flight: 2,
            },
            retry: RetryConfig::default(),
        }
    }
}

/// Elasticsearch sink (off by default): `_bulk` into daily indices `{index_prefix}-YYYY.MM.DD`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Write readings to Elasticsearch. Default false.
    pub enabled: bool,
    /// Cluster URL (no credentials in it). Default `http://127.0.0.1:9200`.
    pub url: String,
    /// Daily index name prefix. Default `iot-data`.
    pub index_prefix: String,
    /// Basic-auth user; empty for none. Default empty.
    pub user: String,
    /// Basic-auth password (prefer `IOTFLOW__ELASTICSEARCH__PASSWORD`). Default empty.
    pub password: String,
    /// API key, the `encoded` value Elasticsearch returned (prefer
    /// `IOTFLOW__ELASTICSEARCH__API_KEY`); instead of user and password. Default empty.
    pub api_key: String,
    /// Install the index template (`schemas/elasticsearch/iot-data-template.json`) at start.
    /// Needs the `manage_index_templates` privilege. Default true.
    pub install_template: bool,
    /// Timeout of every request, in milliseconds. Default 30000.
    pub request_timeout_ms: u64,
    /// Sends of a bulk item refused with 429 or 5xx within one batch write, before the whole
    /// write counts as a transient failure and is retried with backoff. Default 5.
    pub item_attempts: u32,
    /// Batching policy. Defaults 5000 rows, 8 MiB (bulk requests of 5–15 MB are the usual
    /// advice), 500 ms, 2 in flight.
    pub batch: BatchConfig,
    /// Retry policy for transient errors.
    pub retry: RetryConfig,
}

impl Default for ElasticsearchConfig {
    fn default() -> Self {
        ElasticsearchConfig {
            enabled: false,
            url: "http://127.0.0.1:9200".into(),
            index_prefix: "iot-data".into(),
            user: String::new(),
            password: String::new(),
            api_key: String::new(),
            install_template: true,
            request_timeout_ms: 30_000,
            item_attempts: 5,
            batch: BatchConfig {
                max_rows: 5000,
                max_bytes: 8 << 20,
                max_delay_ms: 500,
                linger_ms: 0,
                max_in_flight: 2,
            },
            retry: RetryConfig::default(),
        }
    }
}

/// `iotflow publish-devices`: device business records from MySQL to the broadcast topic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublisherConfig {
    /// MySQL URL of the database holding `device_info`; empty = `mysql.url`. Default empty.
    pub mysql_url: String,
    /// Create `device_info`, its change table and triggers (`schemas/mysql/device_info.sql`)
    /// when missing. Default true.
    pub create_schema: bool,
    /// How often to look for changes when there were none, in milliseconds. Default 500.
    pub poll_interval_ms: u64,
    /// Most changes published per round. Default 1000.
    pub batch_rows: usize,
    /// Address of the publisher's `/metrics`; empty disables it. Default `127.0.0.1:9250`.
    pub metrics_listen: String,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            mysql_url: String::new(),
            create_schema: true,
            poll_interval_ms: 500,
            batch_rows: 1000,
            metrics_listen: "127.0.0.1:9250".into(),
        }
    }
}

/// `iotflow worktime`: per device per day working segments (rules in docs/worktime.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorktimeConfig {
    /// Where the readings are read from: `mysql` (`iot_data`, the day partition) or
    /// `clickhouse` (the `[clickhouse]` table, `FINAL`). Results always go to MySQL. Default
    /// `mysql`.
    pub source: String,
    /// MySQL URL of the database with `iot_data` (read) and `device_work_time` (written);
    /// empty = `mysql.url`. Default empty.
    pub mysql_url: String,
    /// Threshold for devices without a `work_threshold` in `device_info`. Default `"50"`.
    pub threshold: String,
    /// Longest gap between readings inside a working segment, seconds. Default 300.
    pub max_gap_secs: u64,
    /// Pushgateway base URL for the run metrics; empty disables the push. Default
    /// `http://127.0.0.1:9091`.
    pub pushgateway_url: String,
    /// `--schedule`: local time (in `parse.time_zone`) of the daily run for the previous day.
    /// Default `01:00`.
    pub schedule_at: String,
    /// `--schedule`: most missed days caught up at start. Default 7.
    pub catch_up_days: u32,
    /// The streaming job keeps today's working seconds per device, live, at
    /// `/worktime/live` on its metrics endpoint. Default true.
    pub live: bool,
}

impl Default for WorktimeConfig {
    fn default() -> Self {
        WorktimeConfig {
            source: "mysql".into(),
            mysql_url: String::new(),
            threshold: "50".into(),
            max_gap_secs: 300,
            pushgateway_url: "http://127.0.0.1:9091".into(),
            schedule_at: "01:00".into(),
            catch_up_days: 7,
            live: true,
        }
    }
}

/// When a sink writes: whichever limit is reached first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Most rows in one write. Default 2000.
    pub max_rows: usize,
    /// Most encoded bytes in one write. Default 4 MiB (below MariaDB's 16 MiB packet limit).
    pub max_bytes: usize,
    /// Longest a row waits for its batch to fill, in milliseconds. Default 100.
    pub max_delay_ms: u64,
    /// How long a row waits while the writer is idle (no batch in flight), in milliseconds:
    /// 0 writes as soon as rows arrive, and while a write is in flight rows coalesce into the
    /// next batch (up to `max_rows`, `max_bytes`, `max_delay_ms`). Default 0 (MySQL and
    /// Elasticsearch), 50 (ClickHouse, whose MergeTree wants fewer, larger inserts).
    pub linger_ms: u64,
    /// Most batches in flight per worker before the sink stops taking input. Default 2.
    pub max_in_flight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_rows: 2000,
            max_bytes: 4 << 20,
            max_delay_ms: 100,
            linger_ms: 0,
            max_in_flight: 2,
        }
    }
}

/// Exponential backoff with full jitter for transient errors. Transient errors are retried
/// until they stop (the job stalls, offsets stay uncommitted); definite errors stop the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff in milliseconds. Default 100.
    pub initial_backoff_ms: u64,
    /// Backoff ceiling in milliseconds. Default 10000.
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
        }
    }
}

/// Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` HTTP endpoint; empty disables it. Process `p` of a cluster
    /// listens on this port + `p`. Default `127.0.0.1:9249` (the port Flink's reporter used).
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9249".into(),
        }
    }
}

/// A configuration that could not be loaded. The message names the file, variable or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a wrongly typed value.
    #[error("invalid configuration{origin}: {message}")]
    Invalid {
        /// Where the offending text came from.
        origin: String,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is well-typed but unusable.
    #[error("invalid configuration: {0}")]
    Value(String),
}

/// The prefix of environment overrides: `IOTFLOW__KAFKA__BROKERS=host:9092`.
pub const ENV_PREFIX: &str = "IOTFLOW__";

impl Config {
    /// Loads defaults, then `file` (if any), then overrides from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment supplied (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?,
                format!(" in {}", path.display()),
            ),
            None => (String::new(), String::new()),
        };
        Self::from_toml_with_env(&text, &origin, env)
    }

    /// Parses TOML `text` and applies environment overrides from `env`.
    pub fn from_toml_with_env(
        text: &str,
        origin: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        // Start from the defaults as a table, so a key left out of a partly given table takes
        // that table's own default (`[clickhouse.batch]` keeps ClickHouse's batch defaults).
        let mut table =
            toml::Table::try_from(Config::default()).expect("the defaults serialize to TOML");
        merge(&mut table, file);
        let mut applied = Vec::new();
        let mut env: Vec<_> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        env.sort();
        for (key, value) in env {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|s| s.to_ascii_lowercase())
                .collect();
            if path.iter().any(|p| p.is_empty()) {
                return Err(ConfigError::Value(format!(
                    "malformed environment variable name {key}"
                )));
            }
            set_path(&mut table, &path, parse_env_value(&value))
                .map_err(|m| ConfigError::Value(format!("{key}: {m}")))?;
            applied.push(key);
        }
        let merged = toml::to_string(&table).expect("a toml table serializes");
        let origin = if applied.is_empty() {
            origin.to_string()
        } else {
            format!(
                "{origin} (with environment overrides {})",
                applied.join(", ")
            )
        };
        let config: Config = toml::from_str(&merged).map_err(|e| ConfigError::Invalid {
            origin,
            message: e.message().to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.zone()?;
        let positive = [
            ("job.epoch_ms", self.job.epoch_ms as usize),
            ("kafka.max_poll_records", self.kafka.max_poll_records),
            ("mysql.batch.max_rows", self.mysql.batch.max_rows),
            ("mysql.batch.max_bytes", self.mysql.batch.max_bytes),
            ("mysql.batch.max_in_flight", self.mysql.batch.max_in_flight),
            ("clickhouse.batch.max_rows", self.clickhouse.batch.max_rows),
            (
                "clickhouse.batch.max_bytes",
                self.clickhouse.batch.max_bytes,
            ),
            (
                "clickhouse.batch.max_in_flight",
                self.clickhouse.batch.max_in_flight,
            ),
            (
                "elasticsearch.batch.max_rows",
                self.elasticsearch.batch.max_rows,
            ),
            (
                "elasticsearch.batch.max_bytes",
                self.elasticsearch.batch.max_bytes,
            ),
            (
                "elasticsearch.batch.max_in_flight",
                self.elasticsearch.batch.max_in_flight,
            ),
            ("publisher.batch_rows", self.publisher.batch_rows),
            (
                "publisher.poll_interval_ms",
                self.publisher.poll_interval_ms as usize,
            ),
            (
                "elasticsearch.request_timeout_ms",
                self.elasticsearch.request_timeout_ms as usize,
            ),
            (
                "elasticsearch.item_attempts",
                self.elasticsearch.item_attempts as usize,
            ),
            ("parse.max_message_bytes", self.parse.max_message_bytes),
            ("job.max_stashed_readings", self.job.max_stashed_readings),
            (
                "kafka.fetch_queue_max_kbytes",
                self.kafka.fetch_queue_max_kbytes,
            ),
            (
                "kafka.fetch_wait_max_ms",
                self.kafka.fetch_wait_max_ms as usize,
            ),
            (
                "mysql.write_timeout_ms",
                self.mysql.write_timeout_ms as usize,
            ),
            (
                "clickhouse.write_timeout_ms",
                self.clickhouse.write_timeout_ms as usize,
            ),
        ];
        let alarms = [
            (
                "alarms.checkpoint_interval_ms",
                self.alarms.checkpoint_interval_ms as usize,
            ),
            (
                "alarms.idle_partition_ms",
                self.alarms.idle_partition_ms as usize,
            ),
        ];
        for (key, value) in positive.into_iter().chain(alarms) {
            if value == 0 {
                return Err(ConfigError::Value(format!("{key} must be greater than 0")));
            }
        }
        if !(1..=MAX_MYSQL_CONNECTIONS_PER_WORKER).contains(&self.mysql.connections_per_worker) {
            return Err(ConfigError::Value(format!(
                "mysql.connections_per_worker = {} must be between 1 and {MAX_MYSQL_CONNECTIONS_PER_WORKER}",
                self.mysql.connections_per_worker
            )));
        }
        if !matches!(self.worktime.source.as_str(), "mysql" | "clickhouse") {
            return Err(ConfigError::Value(format!(
                "worktime.source `{}` must be `mysql` or `clickhouse`",
                self.worktime.source
            )));
        }
        let es = &self.elasticsearch;
        if !es.api_key.is_empty() && (!es.user.is_empty() || !es.password.is_empty()) {
            return Err(ConfigError::Value(
                "elasticsearch: set either api_key or user and password, not both".into(),
            ));
        }
        if es.user.is_empty() && !es.password.is_empty() {
            return Err(ConfigError::Value(
                "elasticsearch.password is set but elasticsearch.user is empty".into(),
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::Value("kafka.brokers must not be empty".into()));
        }
        for (key, table) in [
            ("mysql.table", &self.mysql.table),
            ("alarms.table", &self.alarms.table),
            ("alarms.state_table", &self.alarms.state_table),
        ] {
            if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::Value(format!(
                    "{key} `{table}` must be letters, digits and underscores"
                )));
            }
        }
        if self.alarms.topic.trim().is_empty() {
            return Err(ConfigError::Value("alarms.topic must not be empty".into()));
        }
        self.alarms.parsed_rules()?;
        self.mqtt.validate()?;
        self.rollups.validate()?;
        if self.rollups.enabled && !self.mysql.enabled {
            return Err(ConfigError::Value(
                "rollups.enabled needs mysql.enabled: the rollups are kept in MySQL, next to the readings they are computed from".into(),
            ));
        }
        Ok(())
    }

    /// The configured time zone.
    pub fn zone(&self) -> Result<iotflow_model::Zone, ConfigError> {
        self.parse
            .time_zone
            .parse()
            .map_err(|e: iotflow_model::ZoneError| {
                ConfigError::Value(format!("parse.time_zone: {e}"))
            })
    }

    /// The parser limits.
    pub fn parse_limits(&self) -> iotflow_model::ParseLimits {
        iotflow_model::ParseLimits {
            max_message_bytes: self.parse.max_message_bytes,
            min_year: self.parse.min_year,
            max_year: self.parse.max_year,
            max_event_age_ms: (self.parse.max_event_age_secs.min(i64::MAX as u64 / 1000) * 1000)
                as i64,
            max_event_lead_ms: (self.parse.max_event_lead_secs.min(i64::MAX as u64 / 1000) * 1000)
                as i64,
        }
    }
}

/// Overlays `over` on `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// An environment value is read as a TOML value when it is one (`42`, `true`, `"x"`,
/// `["a"]`), and as a plain string otherwise (`127.0.0.1:9092`).
fn parse_env_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").expect("key v"),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a section"))?;
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_config_is_the_defaults() {
        assert_eq!(
            Config::from_toml_with_env("", "", env(&[])).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn file_then_environment_win_over_defaults() {
        let text = "[kafka]\nbrokers = \"a:1\"\ntopic = \"t\"\n[mysql.batch]\nmax_rows = 7\n";
        let c = Config::from_toml_with_env(
            text,
            "",
            env(&[
                ("IOTFLOW__KAFKA__BROKERS", "b:2,c:3"),
                ("IOTFLOW__MYSQL__BATCH__MAX_DELAY_MS", "5"),
                ("IOTFLOW__MYSQL__ENABLED", "false"),
                ("IOTFLOW__KAFKA__PROPERTIES__SECURITY.PROTOCOL", "plaintext"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2,c:3");
        assert_eq!(c.kafka.topic, "t");
        assert_eq!(c.mysql.batch.max_rows, 7);
        assert_eq!(c.mysql.batch.max_delay_ms, 5);
        assert!(!c.mysql.enabled);
        assert_eq!(c.kafka.properties["security.protocol"], "plaintext");
        assert_eq!(c.job, JobConfig::default());
    }

    #[test]
    fn a_partly_given_table_keeps_its_own_defaults() {
        let text = "[clickhouse.batch]\nmax_rows = 7\n[elasticsearch.batch]\nmax_delay_ms = 9\n";
        let c = Config::from_toml_with_env(text, "", env(&[])).unwrap();
        assert_eq!(c.clickhouse.batch.max_rows, 7);
        assert_eq!(
            c.clickhouse.batch.max_bytes,
            ClickhouseConfig::default().batch.max_bytes
        );
        assert_eq!(c.clickhouse.batch.max_delay_ms, 1000);
        assert_eq!(c.elasticsearch.batch.max_delay_ms, 9);
        assert_eq!(c.elasticsearch.batch.max_rows, 5000);
    }

    #[test]
    fn elasticsearch_credentials_are_one_kind_at_a_time() {
        let both = env(&[
            ("IOTFLOW__ELASTICSEARCH__API_KEY", "k"),
            ("IOTFLOW__ELASTICSEARCH__USER", "u"),
        ]);
        let e = Config::from_toml_with_env("", "", both)
            .unwrap_err()
            .to_string();
        assert!(e.contains("either api_key or user and password"), "{e}");
        let e =
            Config::from_toml_with_env("", "", env(&[("IOTFLOW__ELASTICSEARCH__PASSWORD", "p")]))
                .unwrap_err()
                .to_string();
        assert!(e.contains("elasticsearch.user is empty"), "{e}");
        assert!(!e.contains("=p"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let e = Config::from_toml_with_env("[kafka]\nbrokerz = \"x\"\n", " in f.toml", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("brokerz") && e.contains("f.toml"), "{e}");
        let e = Config::from_toml_with_env("[kafak]\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("kafak"), "{e}");
        let e = Config::from_toml_with_env("", "", env(&[("IOTFLOW__MYSQL__URLL", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("urll") && e.contains("IOTFLOW__MYSQL__URLL"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let e = Config::from_toml_with_env("[mysql.batch]\nmax_rows = \"many\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_rows") || e.contains("invalid type"), "{e}");
        let e = Config::from_toml_with_env("[parse]\ntime_zone = \"Mars/Base\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Mars/Base"), "{e}");
        let e =
            Config::from_toml_with_env("", "", env(&[("IOTFLOW__MYSQL__BATCH__MAX_ROWS", "0")]))
                .unwrap_err()
                .to_string();
        assert!(e.contains("mysql.batch.max_rows"), "{e}");
        for key in [
            "IOTFLOW__MYSQL__WRITE_TIMEOUT_MS",
            "IOTFLOW__CLICKHOUSE__WRITE_TIMEOUT_MS",
        ] {
            let e = Config::from_toml_with_env("", "", env(&[(key, "0")]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("write_timeout_ms must be greater than 0"), "{e}");
        }
        let e = Config::from_toml_with_env("[mysql]\ntable = \"x; drop\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql.table"), "{e}");
    }

    #[test]
    fn write_timeouts_default_to_30_s_and_can_be_set() {
        let c = Config::default();
        assert_eq!(c.mysql.write_timeout_ms, 30_000);
        assert_eq!(c.clickhouse.write_timeout_ms, 30_000);
        let c = Config::from_toml_with_env(
            "[mysql]\nwrite_timeout_ms = 1500\n",
            "",
            env(&[("IOTFLOW__CLICKHOUSE__WRITE_TIMEOUT_MS", "2500")]),
        )
        .unwrap();
        assert_eq!(c.mysql.write_timeout_ms, 1500);
        assert_eq!(c.clickhouse.write_timeout_ms, 2500);
    }

    #[test]
    fn mysql_write_method_and_connections_default_and_can_be_set() {
        let c = Config::default();
        assert_eq!(c.mysql.write_method, MysqlWriteMethod::LoadData);
        assert_eq!(c.mysql.connections_per_worker, 1);
        let c = Config::from_toml_with_env(
            "[mysql]\nwrite_method = \"insert\"\nconnections_per_worker = 16\n",
            "",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.mysql.write_method, MysqlWriteMethod::Insert);
        assert_eq!(c.mysql.write_method.as_str(), "insert");
        assert_eq!(c.mysql.connections_per_worker, 16);
        assert_eq!(c.clickhouse.compression, ClickhouseCompression::Lz4);
        let c = Config::from_toml_with_env("[clickhouse]\ncompression = \"none\"\n", "", env(&[]))
            .unwrap();
        assert_eq!(c.clickhouse.compression, ClickhouseCompression::None);
        assert!(
            Config::from_toml_with_env("[clickhouse]\ncompression = \"zstd\"\n", "", env(&[]))
                .is_err()
        );
        let c = Config::from_toml_with_env(
            "",
            "",
            env(&[
                ("IOTFLOW__MYSQL__WRITE_METHOD", "load_data"),
                ("IOTFLOW__MYSQL__CONNECTIONS_PER_WORKER", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mysql.write_method, MysqlWriteMethod::LoadData);
        assert_eq!(c.mysql.connections_per_worker, 3);
    }

    #[test]
    fn mysql_write_method_and_connections_out_of_range_are_errors_naming_the_key() {
        for bad in ["0", "17", "1000"] {
            let e = Config::from_toml_with_env(
                "",
                "",
                env(&[("IOTFLOW__MYSQL__CONNECTIONS_PER_WORKER", bad)]),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("mysql.connections_per_worker") && e.contains("between 1 and 16"),
                "{e}"
            );
        }
        let e = Config::from_toml_with_env("[mysql]\nwrite_method = \"copy\"\n", "", env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("copy") && e.contains("load_data") && e.contains("insert"),
            "{e}"
        );
    }

    #[test]
    fn example_config_loads_and_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/iotflow.example.toml");
        let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(
            c,
            Config::default(),
            "deploy/iotflow.example.toml drifted from the defaults"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = Config::load_with_env(Some(Path::new("/nonexistent/x.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
    }
}
