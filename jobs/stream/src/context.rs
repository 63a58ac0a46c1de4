//! What every worker of a process shares, prepared by [`crate::run`] before the graph is built.

use std::sync::{Arc, Mutex};

use iotflow_alarms_flow::AlarmsConnector;
use iotflow_config::Config;
use iotflow_file::{FileSummary, InputFile};
use iotflow_kafka::{DeadLetterLedger, DeadLetterProducer, SourceHandle};
use iotflow_metrics::Metrics;
use iotflow_sink::{Connector, Fatal, SinkEnv};
use iotflow_sink_clickhouse::ClickhouseConnector;
use iotflow_sink_elasticsearch::ElasticsearchConnector;
use iotflow_sink_mysql::MysqlConnector;
use iotflow_worktime::live::LiveBoard;

/// What every worker of a process shares.
#[derive(Clone)]
pub struct JobContext {
    /// The configuration.
    pub config: Config,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Drain/stop coordination.
    pub lifecycle: Arc<SourceHandle>,
    /// The first definite sink error.
    pub fatal: Fatal,
    /// The tokio runtime sinks write on.
    pub runtime: tokio::runtime::Handle,
    /// The checked MySQL sink (when it is enabled).
    pub mysql: Option<MysqlConnector>,
    /// The checked ClickHouse sink (when it is enabled).
    pub clickhouse: Option<ClickhouseConnector>,
    /// The checked Elasticsearch sink (when it is enabled).
    pub elasticsearch: Option<ElasticsearchConnector>,
    /// Where rows a store refused go (when any sink is enabled).
    pub dead_letters: Option<DeadLetterProducer>,
    /// Which dead letters are already in the dead-letter topic (read back at start).
    pub ledger: Arc<DeadLetterLedger>,
    /// The alarm rules, their state and outputs (when `alarms.enabled`).
    pub alarms: Option<AlarmsConnector>,
    /// The live work-time view (when `worktime.live` is on).
    pub live: Option<Arc<Mutex<LiveBoard>>>,
    /// The input files (`--input`), read instead of the readings topic.
    pub files: Option<FileInput>,
}

/// The input files of `iotflow run --input` and what reading them did.
#[derive(Clone, Debug)]
pub struct FileInput {
    /// Every input file of the cluster, in the order that assigns them to workers.
    pub files: Arc<Vec<InputFile>>,
    /// This process's counts and first error.
    pub summary: Arc<FileSummary>,
}

impl JobContext {
    /// Rows the enabled sinks may hold before the source pauses (a row held by two sinks counts
    /// twice); with none enabled, what the MySQL sink's defaults would hold.
    pub fn held_rows(&self) -> usize {
        let held = [
            self.mysql
                .as_ref()
                .map(|s| SinkEnv::held_rows(&s.options().batch)),
            self.clickhouse
                .as_ref()
                .map(|s| SinkEnv::held_rows(&s.options().batch)),
            self.elasticsearch
                .as_ref()
                .map(|s| SinkEnv::held_rows(&s.options().batch)),
        ];
        let sum: usize = held.into_iter().flatten().sum();
        sum.max(SinkEnv::held_rows(&(&self.config.mysql.batch).into()))
    }
}
