//! What the ClickHouse sink hands the job.

use std::time::Duration;

use clickhouse::Client;
use iotflow_config::ClickhouseConfig;
use iotflow_metrics::SinkMetrics;
use iotflow_model::Enriched;
use iotflow_sink::{Connector, RejectRecorder, SinkOptions};

use crate::{Capabilities, ClickhouseWriter};

/// A checked ClickHouse connection and its config section, as returned by
/// [`prepare`](crate::prepare).
#[derive(Clone)]
pub struct ClickhouseConnector {
    pub(crate) config: ClickhouseConfig,
    pub(crate) client: Client,
    pub(crate) version: String,
    pub(crate) capabilities: Capabilities,
}

impl std::fmt::Debug for ClickhouseConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickhouseConnector")
            .field("url", &self.config.url)
            .field("table", &self.config.table)
            .field("version", &self.version)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

impl ClickhouseConnector {
    /// The client, configured for the server's version.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What `SELECT version()` said.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What that version offers.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

impl Connector for ClickhouseConnector {
    type Writer = ClickhouseWriter;

    fn name(&self) -> &'static str {
        "clickhouse"
    }

    fn store(&self) -> &'static str {
        "ClickHouse"
    }

    fn row(enriched: Enriched) -> Enriched {
        enriched
    }

    fn options(&self) -> SinkOptions {
        SinkOptions {
            sink: self.name().into(),
            batch: (&self.config.batch).into(),
            retry: (&self.config.retry).into(),
        }
    }

    /// Sends deduplication tokens where the server knows them; each insert is bounded by
    /// `clickhouse.write_timeout_ms`.
    fn writer(&self, rejects: RejectRecorder, _metrics: &SinkMetrics) -> ClickhouseWriter {
        ClickhouseWriter::new(self.client.clone(), &self.config.table)
            .with_dedup_tokens(self.capabilities.dedup_tokens)
            .with_timeout(Duration::from_millis(self.config.write_timeout_ms))
            .with_rejects(rejects)
    }
}
