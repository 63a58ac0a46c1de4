//! What the Elasticsearch sink hands the job.

use std::time::Duration;

use iotflow_config::ElasticsearchConfig;
use iotflow_metrics::SinkMetrics;
use iotflow_model::Enriched;
use iotflow_sink::{Connector, RejectRecorder, RetryPolicy, SinkOptions};

use crate::{Connection, ElasticsearchWriter, Row};

/// The ceiling of the backoff between sends of bulk items the cluster refused for now (429,
/// 5xx) within one write, whatever `elasticsearch.retry.max_backoff_ms` says.
///
/// Item retries happen inside one batch write, which holds its rows (and the source's
/// back-pressure budget) while it sleeps; after `elasticsearch.item_attempts` sends the whole
/// write fails and the operator's own backoff (up to `retry.max_backoff_ms`) takes over. A
/// long sleep here would only delay that, so item sends wait at most 2 s.
pub const ITEM_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A checked Elasticsearch connection and its config section, as returned by
/// [`prepare`](crate::prepare).
#[derive(Clone, Debug)]
pub struct ElasticsearchConnector {
    pub(crate) config: ElasticsearchConfig,
    pub(crate) connection: Connection,
}

impl ElasticsearchConnector {
    /// The checked connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The backoff between item sends within one write: the sink's retry policy, its ceiling
    /// capped at [`ITEM_RETRY_MAX_BACKOFF`] (and never below the initial backoff).
    pub fn item_backoff(&self) -> RetryPolicy {
        let retry = &self.config.retry;
        let initial = Duration::from_millis(retry.initial_backoff_ms);
        RetryPolicy {
            initial,
            max: Duration::from_millis(retry.max_backoff_ms)
                .min(ITEM_RETRY_MAX_BACKOFF)
                .max(initial),
        }
    }
}

impl Connector for ElasticsearchConnector {
    type Writer = ElasticsearchWriter;

    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    fn store(&self) -> &'static str {
        "Elasticsearch"
    }

    fn row(enriched: Enriched) -> Row {
        Row::from(&enriched)
    }

    fn options(&self) -> SinkOptions {
        SinkOptions {
            sink: self.name().into(),
            batch: (&self.config.batch).into(),
            retry: (&self.config.retry).into(),
        }
    }

    /// Items refused for now are sent `elasticsearch.item_attempts` times per write, with
    /// [`ElasticsearchConnector::item_backoff`]; they count into `items_retried`.
    fn writer(&self, rejects: RejectRecorder, metrics: &SinkMetrics) -> ElasticsearchWriter {
        ElasticsearchWriter::new(self.connection.clone(), &self.config.index_prefix)
            .with_rejects(rejects)
            .with_item_retry(self.config.item_attempts, self.item_backoff())
            .with_item_retries_counter(metrics.items_retried.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_backoff_is_capped() {
        // `item_backoff` only reads the config; any connection will do.
        let connector = |initial: u64, max: u64| {
            let mut config = ElasticsearchConfig::default();
            config.retry.initial_backoff_ms = initial;
            config.retry.max_backoff_ms = max;
            ElasticsearchConnector {
                config,
                connection: Connection::unchecked("http://127.0.0.1:9"),
            }
        };
        let ms = Duration::from_millis;
        let b = connector(100, 30_000).item_backoff();
        assert_eq!((b.initial, b.max), (ms(100), ITEM_RETRY_MAX_BACKOFF));
        let b = connector(100, 500).item_backoff();
        assert_eq!(b.max, ms(500));
        let b = connector(5_000, 30_000).item_backoff();
        assert_eq!(b.max, ms(5_000), "never below the initial backoff");
    }
}
