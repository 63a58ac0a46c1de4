//! What the MySQL sink hands the job.

use std::time::Duration;

use iotflow_config::MysqlConfig;
use iotflow_metrics::SinkMetrics;
use iotflow_model::Enriched;
use iotflow_sink::{Connector, RejectRecorder, SinkOptions};
use mysql_async::Pool;

use crate::{AfterWrite, MysqlWriter, Row};

/// A checked MySQL sink ([`crate::prepare`]): the `[mysql]` section and the pool every
/// worker's writer takes its connections from. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct MysqlConnector {
    config: MysqlConfig,
    pool: Pool,
    after: Option<AfterWriteFactory>,
}

/// Builds one worker's [`AfterWrite`] (given the worker's sink metrics).
pub type AfterWriteFactory =
    std::sync::Arc<dyn Fn(&SinkMetrics) -> Box<dyn AfterWrite> + Send + Sync>;

impl MysqlConnector {
    /// A connector writing to `config.table` through `pool` (normally built by
    /// [`crate::prepare`], which also checks the server).
    pub fn new(config: MysqlConfig, pool: Pool) -> Self {
        MysqlConnector {
            config,
            pool,
            after: None,
        }
    }

    /// Every worker's writer runs the [`AfterWrite`] that `factory` builds after each batch.
    pub fn with_after_write(mut self, factory: AfterWriteFactory) -> Self {
        self.after = Some(factory);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The `[mysql]` section the connector was prepared from.
    pub fn config(&self) -> &MysqlConfig {
        &self.config
    }
}

impl Connector for MysqlConnector {
    type Writer = MysqlWriter;

    fn name(&self) -> &'static str {
        "mysql"
    }

    fn store(&self) -> &'static str {
        "MySQL"
    }

    fn row(enriched: Enriched) -> Row {
        crate::row::row(&enriched)
    }

    fn options(&self) -> SinkOptions {
        SinkOptions {
            sink: self.name().into(),
            batch: (&self.config.batch).into(),
            retry: (&self.config.retry).into(),
        }
    }

    fn writer(&self, rejects: RejectRecorder, metrics: &SinkMetrics) -> MysqlWriter {
        let writer = MysqlWriter::new(self.pool.clone(), &self.config.table)
            .with_timeout(Duration::from_millis(self.config.write_timeout_ms))
            .with_rejects(rejects)
            .with_method(self.config.write_method)
            .with_connections(self.config.connections_per_worker);
        match &self.after {
            Some(factory) => writer.with_after_write(factory(metrics)),
            None => writer,
        }
    }
}
