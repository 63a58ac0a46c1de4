//! The ClickHouse [`BatchWriter`] and the start-up check.

use std::time::Duration;

use clickhouse::Client;
use iotflow_sink::{within, BatchWriter, RejectRecorder, Rejected, SinkError};

use crate::Row;

/// Insert blocks a modern server remembers per table for deduplication (tables the sink
/// creates on 22.2 and later).
pub const DEDUP_WINDOW: u32 = 1000;

/// The DDL of `iot_data`, applied at start when `clickhouse.create_table` is on.
pub const IOT_DATA_DDL: &str = include_str!("../../../schemas/clickhouse/iot_data.sql");

/// Server error codes that go away by themselves.
///
/// 60 and 81 look definite but are not, for this sink: a server restarting answers them for
/// tables and databases it has not loaded yet, and a table or database that is missing for good
/// was already caught by the start-up check ([`prepare`] fails when the table does not exist),
/// so after start they mean "not yet" (or an operator dropped the table under a running job,
/// which then stalls with the error in its log and metrics until the table is back). 218, 236
/// and 394 are what a server shutting down answers for tables being shut down and queries it
/// cancels.
const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut mid-request)
    60,  // UNKNOWN_TABLE (not loaded yet after a restart; see above)
    81,  // UNKNOWN_DATABASE (likewise)
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    218, // TABLE_IS_DROPPED ("dropped or detached": also a table shut down with the server)
    236, // ABORTED (e.g. "Shutdown is called for table")
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY (replica recovering)
    252, // TOO_MANY_PARTS (merges are behind)
    319, // UNKNOWN_STATUS_OF_INSERT
    394, // QUERY_WAS_CANCELLED (a server shutting down cancels running queries)
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

/// The server's error code in a response like `Code: 60, e.displayText() = ...` (old) or
/// `Code: 60. DB::Exception: ...` (new).
fn server_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Type and schema errors are never retried; network trouble and overload are.
pub(crate) fn classify(context: &str, e: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error;
    let message = format!("{context}: {e}");
    let transient = match &e {
        Error::Network(_) | Error::TimedOut => true,
        Error::BadResponse(text) => server_code(text).is_none_or(|c| TRANSIENT_CODES.contains(&c)),
        _ => false,
    };
    if transient {
        SinkError::Transient(message)
    } else {
        SinkError::Definite(message)
    }
}

/// What a server version offers the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The crate's schema validation works (`RowBinaryWithNamesAndTypes`; 24.1 and later).
    pub validation: bool,
    /// `insert_deduplication_token` and `non_replicated_deduplication_window` exist (22.2 and
    /// later): a retried batch can be dropped by the server instead of stored twice.
    pub dedup_tokens: bool,
}

impl Capabilities {
    /// From `SELECT version()` (`18.16.1`, `24.8.4.13`); unknown text offers nothing.
    pub fn of(version: &str) -> Capabilities {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        Capabilities {
            validation: major >= 24,
            dedup_tokens: (major, minor) >= (22, 2),
        }
    }
}

/// The insert deduplication token of a batch: a digest (64-bit FNV-1a, stable across builds)
/// of the source coordinates and event times of its rows, in order. The operator retries a
/// failed batch with exactly the same rows, so a retry carries the same token and a server
/// that already stored the first attempt (the answer was lost) drops the second.
pub fn dedup_token<'a, I>(rows: I) -> String
where
    I: IntoIterator<Item = &'a Row>,
    I::IntoIter: ExactSizeIterator,
{
    let rows = rows.into_iter();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let n = rows.len();
    feed(&(n as u64).to_le_bytes());
    for r in rows {
        feed(&r.src_partition.to_le_bytes());
        feed(&r.src_offset.to_le_bytes());
        feed(&r.event_time.to_le_bytes());
        feed(&r.event_ms.to_le_bytes());
    }
    format!("iotflow-{n}-{h:016x}")
}

/// Server error codes about a value of a row: the row goes to the dead letters. (Parse errors
/// of RowBinary are not among them: rows that passed the parser's column rules only fail to
/// parse when the table's columns differ from the sink's, which is the table's problem.)
const ROW_ERROR_CODES: &[u32] = &[
    69,  // ARGUMENT_OUT_OF_BOUND
    131, // TOO_LARGE_STRING_SIZE
    407, // DECIMAL_OVERFLOW
];

fn is_row_error(e: &clickhouse::error::Error) -> bool {
    matches!(e, clickhouse::error::Error::BadResponse(text) if server_code(text).is_some_and(|c| ROW_ERROR_CODES.contains(&c)))
}

/// The rows of a batch grouped by day (the table's partition, `toYYYYMMDD(event_time)`), in
/// their order within each day. One insert per day: a modern server refuses an insert block
/// that touches more than `max_partitions_per_insert_block` (100) partitions with Code 252, and
/// a block of one partition is what it writes best anyway.
pub fn by_day(rows: &[Row]) -> Vec<Vec<&Row>> {
    let mut days: std::collections::BTreeMap<u32, Vec<&Row>> = Default::default();
    for r in rows {
        days.entry(r.event_time / 86_400).or_default().push(r);
    }
    days.into_values().collect()
}

/// Writes batches of [`Row`]s into one table.
pub struct ClickhouseWriter {
    client: Client,
    table: String,
    dedup_tokens: bool,
    rejects: RejectRecorder,
    timeout: Duration,
}

impl ClickhouseWriter {
    /// How long one write may take by default (the `clickhouse.write_timeout_ms` default).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// A writer on `client` (as returned by [`prepare`]). Sends no deduplication token; see
    /// [`ClickhouseWriter::with_dedup_tokens`]. Each write may take
    /// [`ClickhouseWriter::DEFAULT_TIMEOUT`]; see [`ClickhouseWriter::with_timeout`].
    pub fn new(client: Client, table: &str) -> Self {
        ClickhouseWriter {
            client,
            table: table.to_string(),
            dedup_tokens: false,
            rejects: RejectRecorder::none("clickhouse"),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Bounds each write (the whole INSERT, until the server's answer) by `timeout`: a write
    /// not answered by then is abandoned and fails as transient, so the sink operator retries
    /// it with backoff and counts it, instead of waiting silently on a hung server.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Rows the server refuses for a value (see `ROW_ERROR_CODES`) go to `rejects`, found by
    /// splitting the refused insert in halves; the rest is written. When every row of a
    /// batch of several is refused the table is at fault, not the rows: that is a definite
    /// error and nothing is dead-lettered.
    pub fn with_rejects(mut self, rejects: RejectRecorder) -> Self {
        self.rejects = rejects;
        self
    }

    /// One insert of `rows` (one day's).
    async fn insert(&self, rows: &[&Row]) -> Result<(), clickhouse::error::Error> {
        let mut insert = self.client.insert::<Row>(&self.table).await?;
        if self.dedup_tokens {
            insert = insert.with_setting(
                "insert_deduplication_token",
                dedup_token(rows.iter().copied()),
            );
        }
        for row in rows {
            insert.write(*row).await?;
        }
        insert.end().await
    }

    /// Inserts `rows`, splitting around the rows the server refuses; returns those.
    async fn insert_splitting<'r>(
        &self,
        rows: &[&'r Row],
    ) -> Result<Vec<(&'r Row, String)>, SinkError> {
        let mut refused = Vec::new();
        let mut ranges = vec![(0, rows.len())];
        while let Some((a, b)) = ranges.pop() {
            if a == b {
                continue;
            }
            match self.insert(&rows[a..b]).await {
                Ok(()) => {}
                Err(e) if is_row_error(&e) && b - a == 1 => refused.push((rows[a], e.to_string())),
                Err(e) if is_row_error(&e) => {
                    let mid = a + (b - a) / 2;
                    ranges.push((mid, b));
                    ranges.push((a, mid));
                }
                Err(e) => {
                    return Err(classify(
                        &format!(
                            "inserting {} rows into ClickHouse table `{}`",
                            b - a,
                            self.table
                        ),
                        e,
                    ))
                }
            }
        }
        Ok(refused)
    }

    /// Sends each batch with `insert_deduplication_token` ([`dedup_token`]) when `on`: only
    /// for servers whose [`Capabilities`] say they know the setting (an older server refuses
    /// the insert with `Unknown setting`).
    pub fn with_dedup_tokens(mut self, on: bool) -> Self {
        self.dedup_tokens = on;
        self
    }
}

impl ClickhouseWriter {
    /// One write, without the deadline.
    async fn write_now(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let mut refused = Vec::new();
        for day in by_day(rows) {
            refused.extend(self.insert_splitting(&day).await?);
        }
        if refused.len() == rows.len() && rows.len() > 1 {
            let (_, reason) = &refused[0];
            return Err(SinkError::Definite(format!(
                "ClickHouse refused every one of {} rows for table `{}` (does the table match schemas/clickhouse/iot_data.sql?): {reason}",
                rows.len(),
                self.table
            )));
        }
        for (row, reason) in refused {
            let rejected = Rejected {
                src_partition: row.src_partition,
                src_offset: row.src_offset,
                kafka_ts_ms: Self::kafka_ts_ms(row),
                target: self.table.clone(),
                document: row.document(),
                reason,
            };
            self.rejects.reject(rejected).await?;
        }
        self.rejects.batch_done();
        Ok(())
    }
}

impl BatchWriter for ClickhouseWriter {
    type Row = Row;

    async fn write(&mut self, rows: &[Row]) -> Result<(), SinkError> {
        let (limit, n, table) = (self.timeout, rows.len(), self.table.clone());
        let what = move || format!("inserting {n} rows into ClickHouse table `{table}`");
        within(
            limit,
            "clickhouse.write_timeout_ms",
            what,
            self.write_now(rows),
        )
        .await
    }

    fn row_size(row: &Row) -> usize {
        90 + row.pboxid.len()
            + [
                &row.company,
                &row.site,
                &row.line,
                &row.device_name,
                &row.model,
                &row.device_status,
            ]
            .iter()
            .map(|s| s.as_ref().map_or(1, |s| s.len() + 2))
            .sum::<usize>()
    }

    fn kafka_ts_ms(row: &Row) -> Option<i64> {
        row.kafka_ts
            .map(|s| s as i64 * 1000 + row.kafka_ms.unwrap_or(0) as i64)
    }
}

/// A checked connection.
#[derive(Clone)]
pub struct Prepared {
    /// The client, configured for the server's version.
    pub client: Client,
    /// What `SELECT version()` said.
    pub version: String,
    /// What that version offers.
    pub capabilities: Capabilities,
}

/// Connects, reads the server version, and (optionally) creates the table. Servers before 24.1
/// cannot describe a table the way the crate's schema validation needs
/// (`RowBinaryWithNamesAndTypes`), so validation is turned off there; the round-trip
/// integration test is what guards the row layout.
pub async fn prepare(
    url: &str,
    user: &str,
    password: &str,
    database: &str,
    table: &str,
    create_table: bool,
    timeout: Duration,
) -> Result<Prepared, String> {
    let base = Client::default()
        .with_url(url)
        .with_user(user)
        .with_password(password)
        .with_database(database)
        .with_validation(false);
    let version: String = tokio::time::timeout(timeout, base.query("SELECT version()").fetch_one())
        .await
        .map_err(|_| format!("cannot reach ClickHouse at {url}: no answer within {timeout:?}"))?
        .map_err(|e| format!("cannot reach ClickHouse at {url}: {e}"))?;
    let capabilities = Capabilities::of(&version);
    let client = base.clone().with_validation(capabilities.validation);
    if create_table {
        // Comments go (the crate reads `?` as a bind placeholder, and comments have some).
        let mut ddl: String = IOT_DATA_DDL
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("EXISTS iot_data (", &format!("EXISTS `{table}` ("));
        if capabilities.dedup_tokens {
            // Plain MergeTree tables deduplicate inserts only with a window of remembered
            // blocks; 18.16 does not know the setting.
            ddl = format!(
                "{}\nSETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}",
                ddl.trim_end().trim_end_matches(';')
            );
        }
        base.query(&ddl).execute().await.map_err(|e| {
            format!("creating ClickHouse table `{database}`.`{table}` on {url}: {e}")
        })?;
    }
    let exists: u64 = base
        .query("SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?")
        .bind(table)
        .fetch_one()
        .await
        .map_err(|e| format!("ClickHouse at {url}: {e}"))?;
    if exists == 0 {
        return Err(format!(
            "ClickHouse table `{database}`.`{table}` does not exist on {url}; apply schemas/clickhouse/iot_data.sql or set clickhouse.create_table = true"
        ));
    }
    if capabilities.dedup_tokens {
        let engine: String = base
            .query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?")
            .bind(table)
            .fetch_one()
            .await
            .map_err(|e| format!("ClickHouse at {url}: {e}"))?;
        let windowed = engine.contains("non_replicated_deduplication_window")
            || engine.starts_with("Replicated");
        if !windowed {
            tracing::warn!(%table, "ClickHouse table has no non_replicated_deduplication_window: a retried batch whose first attempt was stored leaves duplicates until merges (FINAL still counts exactly); ALTER TABLE {table} MODIFY SETTING non_replicated_deduplication_window = {DEDUP_WINDOW} to drop them at insert");
        }
    }
    tracing::info!(%url, %version, validation = capabilities.validation, dedup_tokens = capabilities.dedup_tokens, "ClickHouse sink ready");
    Ok(Prepared {
        client,
        version,
        capabilities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_the_version() {
        let c = |v: &str| Capabilities::of(v);
        assert_eq!(
            c("18.16.1"),
            Capabilities {
                validation: false,
                dedup_tokens: false
            }
        );
        assert!(!c("22.1.3.7").dedup_tokens);
        assert!(c("22.2.2.1").dedup_tokens && !c("22.2.2.1").validation);
        assert!(c("23.8.16.40").dedup_tokens);
        assert_eq!(
            c("24.8.4.13"),
            Capabilities {
                validation: true,
                dedup_tokens: true
            }
        );
        assert_eq!(c("garbage"), c("0.0"));
    }

    fn row(partition: i32, offset: i64) -> Row {
        Row {
            event_time: 1_744_329_600,
            event_ms: 125,
            pboxid: "p".into(),
            metric: 1,
            latitude: 2,
            longitude: 3,
            company: None,
            site: None,
            line: None,
            device_name: None,
            model: None,
            device_status: None,
            work_threshold: None,
            src_partition: partition,
            src_offset: offset,
            kafka_ts: None,
            kafka_ms: None,
        }
    }

    #[test]
    fn a_batch_is_inserted_one_day_at_a_time_in_order() {
        // 150 days in one batch: a modern server refuses a block of more than 100 partitions
        // (Code 252); one insert per day never comes near it.
        let mut rows = Vec::new();
        for i in 0..300i64 {
            let mut r = row(0, i);
            r.event_time = 1_744_329_600 + ((i % 150) as u32) * 86_400 + (i as u32 % 7) * 3600;
            rows.push(r);
        }
        let days = by_day(&rows);
        assert_eq!(days.len(), 150);
        for day in &days {
            assert_eq!(day.len(), 2);
            let d = day[0].event_time / 86_400;
            assert!(
                day.iter().all(|r| r.event_time / 86_400 == d),
                "one partition per insert"
            );
            assert!(
                day[0].src_offset < day[1].src_offset,
                "batch order kept within a day"
            );
        }
        assert_eq!(days.iter().map(Vec::len).sum::<usize>(), rows.len());
    }

    #[test]
    fn dedup_tokens_are_the_batch_content() {
        let a = vec![row(0, 1), row(0, 2), row(1, 7)];
        assert_eq!(
            dedup_token(&a),
            dedup_token(&a.clone()),
            "a retry repeats its token"
        );
        assert_eq!(
            dedup_token(&a),
            "iotflow-3-".to_string() + &dedup_token(&a)[10..]
        );
        let mut b = a.clone();
        b[2].src_offset = 8;
        assert_ne!(dedup_token(&a), dedup_token(&b));
        assert_ne!(dedup_token(&a), dedup_token(&a[..2]));
        let mut c = a.clone();
        c.swap(0, 1);
        assert_ne!(
            dedup_token(&a),
            dedup_token(&c),
            "order matters (blocks are compared whole)"
        );
    }

    #[test]
    fn reads_server_codes_of_old_and_new_servers() {
        assert_eq!(
            server_code("Code: 60, e.displayText() = DB::Exception: Table x doesn't exist"),
            Some(60)
        );
        assert_eq!(
            server_code("Code: 252. DB::Exception: Too many parts"),
            Some(252)
        );
        assert_eq!(server_code("502 Bad Gateway"), None);
    }

    #[test]
    fn classification() {
        use clickhouse::error::Error;
        assert!(classify("x", Error::TimedOut).is_transient());
        assert!(
            classify("x", Error::BadResponse("Code: 252. Too many parts".into())).is_transient()
        );
        assert!(classify("x", Error::BadResponse("503 Service Unavailable".into())).is_transient());
        assert!(
            !classify("x", Error::BadResponse("Code: 53. Type mismatch".into())).is_transient()
        );
        assert!(!classify("x", Error::NotEnoughData).is_transient());
    }

    #[test]
    fn a_restarting_or_stopping_server_is_transient() {
        use clickhouse::error::Error;
        // What 18.16 answers for a table it has not loaded (yet): transient, because the
        // start-up check already proved the table exists.
        let unknown = "Code: 60, e.displayText() = DB::Exception: Table iotflow.iot_data doesn't exist., e.what() = DB::Exception\n";
        assert!(classify("x", Error::BadResponse(unknown.into())).is_transient());
        // The modern form, and the database not loaded yet.
        for text in [
            "Code: 60. DB::Exception: Table iotflow.iot_data does not exist. (UNKNOWN_TABLE) (version 24.8.4.13 (official build))",
            "Code: 81. DB::Exception: Database iotflow does not exist. (UNKNOWN_DATABASE)",
            "Code: 218. DB::Exception: Table is dropped or detached. (TABLE_IS_DROPPED)",
            "Code: 236. DB::Exception: Shutdown is called for table. (ABORTED)",
            "Code: 394. DB::Exception: Query was cancelled. (QUERY_WAS_CANCELLED)",
            "Code: 210. DB::NetException: Connection reset by peer (NETWORK_ERROR)",
        ] {
            let e = classify("inserting", Error::BadResponse(text.into()));
            assert!(e.is_transient(), "{text}");
            assert!(e.to_string().contains(text), "the server's words are kept: {e}");
        }
        // Schema and privilege errors stay definite.
        for text in [
            "Code: 16. DB::Exception: No such column metric in table iotflow.iot_data",
            "Code: 497. DB::Exception: default: Not enough privileges. (ACCESS_DENIED)",
            "Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)",
        ] {
            assert!(
                !classify("x", Error::BadResponse(text.into())).is_transient(),
                "{text}"
            );
        }
    }
}
