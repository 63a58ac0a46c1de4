//! The Elasticsearch sink for enriched readings.
//!
//! Documents go in through the `_bulk` API (NDJSON over HTTP, `reqwest`) into daily indices
//! `{prefix}-YYYY.MM.DD`, named for the day of the reading's `event_time`. The indices take
//! their mappings from an index template ([`IOT_DATA_TEMPLATE`], installed by [`prepare`]).
//! The job calls [`prepare`] once (auth and template from the config) and builds each worker's
//! [`ElasticsearchWriter`] from the returned [`ElasticsearchConnector`]
//! (`iotflow_sink::Connector`).
//!
//! * **Idempotent.** Each document's `_id` is `{src_partition}-{src_offset}-{event_time ms}`
//!   ([`doc_id`]) and the bulk action is `index`, so a record Kafka delivers again, or a
//!   batch the operator retries, overwrites itself instead of becoming a second document.
//! * **Exact decimals in `_source`.** The encoder writes each decimal's own text as the JSON
//!   number, never going through `f64`. The *indexed* `metric` is a `double`, not a
//!   `scaled_float`: Elasticsearch parses the number into a `double` before scaling anyway, so
//!   `scaling_factor: 1e8` would add no precision beyond a double's ~15–17 digits, and it would
//!   add a cliff: values beyond ±9.2e10 do not fit the scaled `long`. Exact values come
//!   from `_source`.
//! * **Local wall time.** `event_time` is written as `yyyy-MM-dd HH:mm:ss.SSS` in the device's
//!   zone with no offset; Elasticsearch reads zone-less dates as UTC, so the stored instant is
//!   the wall time read as UTC (as in the MySQL and ClickHouse sinks). Dashboards should show
//!   it in UTC to see the local wall time. `kafka_ts` is a true instant (epoch milliseconds).
//! * **Item-by-item classification** ([`retry`]). A bulk response says what became of each
//!   document: 429 and 5xx items are sent again (alone); refusals about the cluster or the
//!   index rather than the document (cluster blocks, the shard limit, missing privileges, an
//!   index the cluster will not create, a closed index: [`retry::cluster_error`]) fail the
//!   whole write, transient or definite; other refusals (e.g. 400 `mapper_parsing_exception`)
//!   go through the writer's [`RejectRecorder`](iotflow_sink::RejectRecorder) to the dead
//!   letters, and `write` returns `Ok` only when every document is stored or its rejection is
//!   durable.
//!
//! No Elasticsearch can be installed on the machine this crate was written on: its tests
//! (`tests/bulk_stand_in.rs`) run against a stand-in HTTP server inside the test suite that
//! implements `GET /`, `PUT /_index_template/..` and `POST /_bulk` after the documented
//! formats. Nothing here has been run against a real cluster yet.

mod connector;
pub mod encoder;
mod health;
pub mod response;
pub mod retry;
mod row;
mod writer;

pub use connector::{ElasticsearchConnector, ITEM_RETRY_MAX_BACKOFF};
pub use health::{prepare, Auth, Connection, IOT_DATA_TEMPLATE};
pub use iotflow_config::ElasticsearchConfig;
pub use row::{doc_id, index_name, Row};
pub use writer::ElasticsearchWriter;
