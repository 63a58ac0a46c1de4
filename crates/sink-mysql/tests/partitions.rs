//! Day partitions and row encoding against a real MariaDB (or MySQL) server.
//!
//! The server is read from `IOTFLOW_TEST_MYSQL_URL`, by default
//! `mysql://iotflow:iotflow@127.0.0.1:3306/iotflow`, which `bash deploy/local/start.sh` provides.
//! When no server answers, the tests fail and say how to start one: they never pass silently.
//!
//! Each test creates its own database `<db>_t_<random>` (utf8mb4) and drops it at the end, so the
//! tests run in parallel and leave nothing behind. The user therefore needs ALL PRIVILEGES on
//! databases matching `<db>\_%` (start.sh grants `iotflow\_%`), or global CREATE and DROP plus
//! ALTER, INSERT, SELECT and LOCK on those databases. Named locks need no privilege.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{NaiveDate, NaiveDateTime};
use iotflow_sink_mysql::encoder::{self, encode_insert};
use iotflow_sink_mysql::partitions::{PartitionError, PartitionManager, UpperBound};
use iotflow_sink_mysql::Row;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

mod common;
use common::*;

const SCHEMA: &str = include_str!("../../../schemas/mysql/iot_data.sql");
fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn p_name(d: NaiveDate) -> String {
    format!("p{}", d.format("%Y%m%d"))
}

fn row(event_time: NaiveDateTime, src_partition: i32, src_offset: i64) -> Row {
    Row {
        event_time,
        pboxid: format!("pbox-{:03}", src_offset % 17),
        metric: Decimal::new(src_offset * 125 + 1, 3),
        latitude: dec("31.23045678"),
        longitude: dec("121.47370123"),
        company: Some("ACME".into()),
        site: Some("Shanghai".into()),
        line: None,
        device_name: Some(format!("press {src_offset}")),
        model: Some("X-1".into()),
        device_status: Some("working".into()),
        work_threshold: Some(dec("10.5")),
        src_partition,
        src_offset,
        kafka_ts_ms: Some(1_744_273_815_123 + src_offset),
    }
}

async fn insert(conn: &mut Conn, rows: &[Row]) {
    let mut sql = String::new();
    encode_insert("iot_data", rows, &mut sql);
    conn.query_drop(&sql).await.expect("insert");
    assert_eq!(conn.get_warnings(), 0, "the insert raised warnings");
}

/// (name, PARTITION_DESCRIPTION) in partition order, read independently of the crate.
async fn layout(conn: &mut Conn) -> Vec<(String, String)> {
    conn.query(
        "SELECT PARTITION_NAME, PARTITION_DESCRIPTION FROM information_schema.PARTITIONS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'iot_data' \
         ORDER BY PARTITION_ORDINAL_POSITION",
    )
    .await
    .expect("read layout")
}

async fn count(conn: &mut Conn, sql: String) -> u64 {
    conn.query_first(sql)
        .await
        .expect("count")
        .expect("one row")
}

async fn rows_in_partition(conn: &mut Conn, partition: &str) -> u64 {
    count(
        conn,
        format!("SELECT COUNT(*) FROM iot_data PARTITION (`{partition}`)"),
    )
    .await
}

/// Each day in `days` has a partition `pYYYYMMDD` whose bounds are exactly that day.
fn assert_day_partitions(layout: &[(String, String)], days: &BTreeSet<NaiveDate>) {
    let bound = |description: &str| {
        UpperBound::parse(description).unwrap_or_else(|| panic!("bound {description}"))
    };
    let midnight = |d: NaiveDate| UpperBound::Before(d.and_hms_opt(0, 0, 0).unwrap());
    for &d in days {
        let at = layout
            .iter()
            .position(|(name, _)| *name == p_name(d))
            .unwrap_or_else(|| panic!("no partition {} in {layout:?}", p_name(d)));
        assert_eq!(
            bound(&layout[at].1),
            midnight(d.succ_opt().unwrap()),
            "upper bound of {}",
            p_name(d)
        );
        assert!(
            at > 0,
            "{} is the first partition: no lower bound",
            p_name(d)
        );
        assert_eq!(
            bound(&layout[at - 1].1),
            midnight(d),
            "lower bound of {}",
            p_name(d)
        );
    }
}

/// Apply the schema from a manager's point of view: a fresh table with only `pmax`.
async fn apply_schema(conn: &mut Conn) {
    conn.query_drop(SCHEMA)
        .await
        .expect("apply schemas/mysql/iot_data.sql");
}

#[tokio::test]
async fn schema_applies_twice_without_touching_existing_partitions_or_rows() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        apply_schema(&mut conn).await;
        assert_eq!(
            layout(&mut conn).await,
            [("pmax".to_owned(), "MAXVALUE".to_owned())]
        );

        let t = day(2025, 4, 10).and_hms_milli_opt(8, 0, 0, 0).unwrap();
        let mut manager = PartitionManager::new("iot_data");
        manager.ensure_days(&mut conn, [t.date()]).await.unwrap();
        insert(&mut conn, &[row(t, 0, 1)]).await;
        let before = layout(&mut conn).await;

        apply_schema(&mut conn).await;
        apply_schema(&mut conn).await;
        assert_eq!(layout(&mut conn).await, before);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM iot_data".into()).await,
            1
        );
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn rows_for_five_days_in_random_order_each_land_in_their_own_partition() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        apply_schema(&mut conn).await;
        // A layout made by hand, as in the article, with a multi-day gap [04-12, 04-16).
        conn.query_drop(
            "ALTER TABLE iot_data REORGANIZE PARTITION pmax INTO (\
             PARTITION p20250410 VALUES LESS THAN ('2025-04-11'), \
             PARTITION p20250411 VALUES LESS THAN ('2025-04-12'), \
             PARTITION p20250415 VALUES LESS THAN ('2025-04-16'), \
             PARTITION pmax VALUES LESS THAN (MAXVALUE))",
        )
        .await
        .unwrap();
        // A row already in the human-made gap: reorganizing must move it to its day.
        let early = day(2025, 4, 13).and_hms_milli_opt(12, 0, 0, 0).unwrap();
        insert(&mut conn, &[row(early, 9, 0)]).await;
        assert_eq!(rows_in_partition(&mut conn, "p20250415").await, 1);

        let days = [
            day(2025, 4, 8),  // before the first partition
            day(2025, 4, 10), // the first partition, which has no lower bound
            day(2025, 4, 11), // already has its own partition
            day(2025, 4, 13), // inside the gap
            day(2025, 4, 20), // inside pmax
        ];
        let mut rng = StdRng::seed_from_u64(0x0010_f10e);
        let mut rows = Vec::new();
        let mut offset = 1;
        for d in days {
            // Both ends of the day, and random times in between.
            let mut times = vec![
                d.and_hms_milli_opt(0, 0, 0, 0).unwrap(),
                d.and_hms_milli_opt(23, 59, 59, 999).unwrap(),
            ];
            for _ in 0..rng.random_range(3..20) {
                let ms = rng.random_range(0..86_400_000u32);
                times.push(
                    d.and_hms_milli_opt(
                        ms / 3_600_000,
                        ms / 60_000 % 60,
                        ms / 1000 % 60,
                        ms % 1000,
                    )
                    .unwrap(),
                );
            }
            for t in times {
                rows.push(row(t, offset as i32 % 4, offset));
                offset += 1;
            }
        }
        rows.shuffle(&mut rng);

        let mut manager = PartitionManager::new("iot_data");
        let mut rest = &rows[..];
        while !rest.is_empty() {
            let (batch, tail) = rest.split_at(rng.random_range(1..=rest.len().min(25)));
            manager
                .ensure_days(&mut conn, encoder::days(batch))
                .await
                .unwrap();
            insert(&mut conn, batch).await;
            rest = tail;
        }

        let wanted: BTreeSet<NaiveDate> = days.into();
        let layout = layout(&mut conn).await;
        assert_day_partitions(&layout, &wanted);
        assert_eq!(
            layout.last().unwrap(),
            &("pmax".to_owned(), "MAXVALUE".to_owned())
        );
        // Splitting can leave neighbours that are exactly one day too (04-09, 04-12).
        assert!(manager.known_days().is_superset(&wanted));

        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for r in rows.iter().chain([&row(early, 9, 0)]) {
            *expected.entry(p_name(r.event_time.date())).or_default() += 1;
        }
        for (name, _) in &layout {
            let found = rows_in_partition(&mut conn, name).await;
            assert_eq!(
                found,
                expected.get(name).copied().unwrap_or(0),
                "rows in {name}"
            );
        }
        assert_eq!(rows_in_partition(&mut conn, "pmax").await, 0);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM iot_data".into()).await,
            rows.len() as u64 + 1
        );
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ensure_days_from_four_connections_create_each_partition_once() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts.clone()).await;
        apply_schema(&mut conn).await;

        let first = day(2025, 6, 1);
        let day_sets: Vec<Vec<NaiveDate>> = (0..4u64)
            .map(|worker| {
                // Overlapping windows plus one day everybody wants.
                let mut days: Vec<NaiveDate> = (worker * 3..worker * 3 + 6)
                    .map(|i| first + chrono::Days::new(i))
                    .chain([day(2025, 5, 1)])
                    .collect();
                days.shuffle(&mut StdRng::seed_from_u64(worker));
                days
            })
            .collect();
        let all: BTreeSet<NaiveDate> = day_sets.iter().flatten().copied().collect();

        for round in 0..2 {
            let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(day_sets.len()));
            let tasks: Vec<_> = day_sets
                .iter()
                .cloned()
                .map(|days| {
                    let opts = opts.clone();
                    let barrier = barrier.clone();
                    tokio::spawn(async move {
                        let mut conn = connect(opts).await;
                        let mut manager = PartitionManager::new("iot_data");
                        barrier.wait().await;
                        manager.ensure_days(&mut conn, days.iter().copied()).await?;
                        let rows: Vec<Row> = days
                            .iter()
                            .map(|d| d.and_hms_milli_opt(12, 0, 0, 0).unwrap())
                            .enumerate()
                            .map(|(i, t)| row(t, 0, t.and_utc().timestamp() + i as i64))
                            .collect();
                        let mut sql = String::new();
                        encode_insert("iot_data", &rows, &mut sql);
                        conn.query_drop(&sql).await.expect("insert");
                        conn.disconnect().await.expect("disconnect");
                        Ok::<u64, PartitionError>(manager.partitions_created())
                    })
                })
                .collect();
            let mut created = 0;
            for task in tasks {
                created += task.await.unwrap().expect("ensure_days");
            }
            let expected = if round == 0 { all.len() as u64 } else { 0 };
            assert_eq!(created, expected, "ALTERs in round {round}");
        }

        let layout = layout(&mut conn).await;
        assert_day_partitions(&layout, &all);
        let names: BTreeSet<&str> = layout.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), layout.len(), "duplicate names in {layout:?}");
        assert!(
            !layout.iter().any(|(name, _)| name.contains('_')),
            "a partition was created twice: {layout:?}"
        );
        assert_eq!(rows_in_partition(&mut conn, "pmax").await, 0);
        conn.disconnect().await.unwrap();
    })
    .await;
}

const NASTY: &[&str] = &[
    "'; DROP TABLE iot_data; --",
    "Robert'); DROP TABLE iot_data;--",
    "back\\slash\\",
    "\\'",
    "\\\\'",
    "\\0 not a nul",
    "''doubled''",
    "\"double\" quotes",
    "nul\0byte",
    "ctrl-z\x1aend",
    "new\nline\r\ncrlf",
    "tab\tand\x08backspace",
    "%_ wildcards",
    "`backtick`",
    "/* comment */ -- comment # comment",
    "ünïcödé 温度计 Ελληνικά",
    "emoji 🔥🌡️👩‍🔧",
    "trailing space ",
    "",
];

#[tokio::test]
async fn encoder_round_trips_sql_metacharacters_and_exact_decimals() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        apply_schema(&mut conn).await;
        let sql_mode: String = conn
            .query_first("SELECT @@SESSION.sql_mode")
            .await
            .unwrap()
            .unwrap();
        assert!(
            iotflow_mysql::sql_mode_is_compatible(&sql_mode),
            "{sql_mode}"
        );

        let t0 = day(2025, 4, 10).and_hms_milli_opt(0, 0, 0, 1).unwrap();
        let decimals = [
            ("1234567890123456.12345678", "-90", "-180"),
            ("-9999999999999999.99999999", "90", "180"),
            ("0.00000001", "-0.00000001", "0.00000001"),
            ("-0.00000001", "0", "-0"),
            ("0", "31.23045678", "121.47370123"),
            ("42", "-999.99999999", "999.99999999"),
            // More digits than the column: rounded half away from zero before sending.
            ("0.123456785", "1.000000005", "-1.000000005"),
        ];
        let mut rows = Vec::new();
        for (i, text) in NASTY.iter().enumerate() {
            let (metric, lat, lon) = decimals[i % decimals.len()];
            let mut r = row(
                t0 + chrono::Duration::milliseconds(i as i64 * 1001),
                1,
                i as i64,
            );
            r.pboxid = text.chars().take(64).collect();
            r.metric = dec(metric);
            r.latitude = dec(lat);
            r.longitude = dec(lon);
            r.company = Some(text.to_string());
            r.site = Some(format!("{text}{text}"));
            r.line = (i % 2 == 0).then(|| text.to_string());
            r.device_name = Some(text.chars().rev().collect());
            r.model = None;
            r.device_status = Some(text.chars().take(32).collect());
            r.work_threshold = (i % 3 != 0).then(|| dec(metric));
            r.kafka_ts_ms = (i % 4 != 0).then_some(1_744_243_200_000 + i as i64);
            encoder::validate_row(&r).unwrap();
            rows.push(r);
        }
        let mut manager = PartitionManager::new("iot_data");
        manager
            .ensure_days(&mut conn, encoder::days(&rows))
            .await
            .unwrap();
        insert(&mut conn, &rows).await;

        let stored: Vec<mysql_async::Row> = conn
            .query(
                "SELECT event_time, pboxid, metric, latitude, longitude, company, site, line, \
                 device_name, model, device_status, work_threshold, src_partition, src_offset, \
                 kafka_ts FROM iot_data ORDER BY src_offset",
            )
            .await
            .unwrap();
        assert_eq!(stored.len(), rows.len());
        let round = |d: Decimal| {
            d.round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
        };
        for (want, got) in rows.iter().zip(stored) {
            let back = Row {
                event_time: got.get(0).unwrap(),
                pboxid: got.get(1).unwrap(),
                metric: got.get(2).unwrap(),
                latitude: got.get(3).unwrap(),
                longitude: got.get(4).unwrap(),
                company: got.get(5).unwrap(),
                site: got.get(6).unwrap(),
                line: got.get(7).unwrap(),
                device_name: got.get(8).unwrap(),
                model: got.get(9).unwrap(),
                device_status: got.get(10).unwrap(),
                work_threshold: got.get(11).unwrap(),
                src_partition: got.get(12).unwrap(),
                src_offset: got.get(13).unwrap(),
                kafka_ts_ms: got
                    .get::<Option<NaiveDateTime>, _>(14)
                    .unwrap()
                    .map(|ts| ts.and_utc().timestamp_millis()),
            };
            let expected = Row {
                metric: round(want.metric),
                latitude: round(want.latitude),
                longitude: round(want.longitude),
                work_threshold: want.work_threshold.map(round),
                ..want.clone()
            };
            assert_eq!(back, expected);
            // Scale 8 on the wire: the exact digits, not a float's.
            assert_eq!(
                back.metric.to_string(),
                format!("{:.8}", expected.metric),
                "metric of row {}",
                want.src_offset
            );
        }
        let rounded: Vec<(String, String, String)> = conn
            .query(
                "SELECT CAST(metric AS CHAR), CAST(latitude AS CHAR), CAST(longitude AS CHAR) \
                 FROM iot_data WHERE src_offset = 6",
            )
            .await
            .unwrap();
        assert_eq!(
            rounded,
            [(
                "0.12345679".into(),
                "1.00000001".into(),
                "-1.00000001".into()
            )]
        );
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reinserting_the_same_source_offsets_leaves_the_row_count_unchanged() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        apply_schema(&mut conn).await;
        let start = day(2025, 4, 10).and_hms_milli_opt(22, 0, 0, 0).unwrap();
        let rows: Vec<Row> = (0..200)
            .map(|i| row(start + chrono::Duration::seconds(i * 60), (i % 3) as i32, i))
            .collect();
        let mut manager = PartitionManager::new("iot_data");
        manager
            .ensure_days(&mut conn, encoder::days(&rows))
            .await
            .unwrap();
        assert_eq!(manager.known_days().len(), 2);

        insert(&mut conn, &rows).await;
        assert_eq!(count(&mut conn, count_all()).await, 200);

        // Kafka delivers the same readings again, even with a different payload.
        insert(&mut conn, &rows).await;
        let mut changed = rows.clone();
        for r in &mut changed {
            r.metric = dec("-1");
        }
        insert(&mut conn, &changed).await;
        assert_eq!(count(&mut conn, count_all()).await, 200);
        assert_eq!(
            count(
                &mut conn,
                "SELECT COUNT(*) FROM iot_data WHERE metric = -1".into()
            )
            .await,
            0,
            "the first write wins"
        );

        // Half re-delivered, half new.
        let more: Vec<Row> = (150..250)
            .map(|i| row(start + chrono::Duration::seconds(i * 60), (i % 3) as i32, i))
            .collect();
        manager
            .ensure_days(&mut conn, encoder::days(&more))
            .await
            .unwrap();
        insert(&mut conn, &more).await;
        assert_eq!(count(&mut conn, count_all()).await, 250);
        conn.disconnect().await.unwrap();
    })
    .await;
}

fn count_all() -> String {
    "SELECT COUNT(*) FROM iot_data".to_owned()
}

#[tokio::test]
async fn layouts_without_maxvalue_or_with_noon_bounds_are_extended_and_carved() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        conn.query_drop(
            "CREATE TABLE iot_data (event_time DATETIME(3) NOT NULL, pboxid VARCHAR(64) NOT NULL, \
             metric DECIMAL(24,8) NOT NULL, latitude DECIMAL(11,8) NOT NULL, \
             longitude DECIMAL(11,8) NOT NULL, company VARCHAR(128), site VARCHAR(128), \
             line VARCHAR(128), device_name VARCHAR(128), model VARCHAR(128), \
             device_status VARCHAR(32), work_threshold DECIMAL(24,8), src_partition INT NOT NULL, \
             src_offset BIGINT NOT NULL, kafka_ts DATETIME(3), \
             PRIMARY KEY (src_partition, src_offset, event_time)) DEFAULT CHARSET=utf8mb4 \
             PARTITION BY RANGE COLUMNS(event_time) (\
             PARTITION a VALUES LESS THAN ('2025-04-10 12:00:00'), \
             PARTITION b VALUES LESS THAN ('2025-04-12 12:00:00.500'))",
        )
        .await
        .unwrap();
        let noon = |d: u32| day(2025, 4, d).and_hms_milli_opt(12, 0, 0, 0).unwrap();
        let rows = [
            row(noon(10), 0, 1),
            row(noon(11), 0, 2),
            row(noon(12), 0, 3),
        ];
        insert(&mut conn, &rows).await;

        let mut manager = PartitionManager::new("iot_data");
        // 04-11 sits inside b; 04-12 straddles b's end; 04-15 is past the last bound.
        let days = [day(2025, 4, 11), day(2025, 4, 12), day(2025, 4, 15)];
        manager.ensure_days(&mut conn, days).await.unwrap();
        let layout = layout(&mut conn).await;
        assert_day_partitions(&layout, &days.into());
        assert_eq!(layout.last().unwrap().0, "p20250415");
        for d in [day(2025, 4, 11), day(2025, 4, 12)] {
            assert_eq!(rows_in_partition(&mut conn, &p_name(d)).await, 1);
        }
        insert(&mut conn, &[row(noon(15), 0, 4)]).await;
        assert_eq!(rows_in_partition(&mut conn, "p20250415").await, 1);
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn missing_or_unpartitioned_tables_are_definite_errors() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts).await;
        let mut manager = PartitionManager::new("iot_data");
        let err = manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap_err();
        assert!(matches!(err, PartitionError::TableMissing { .. }), "{err}");
        assert!(!err.is_transient());

        conn.query_drop("CREATE TABLE iot_data (event_time DATETIME(3) NOT NULL)")
            .await
            .unwrap();
        let err = manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, PartitionError::UnexpectedLayout { .. }),
            "{err}"
        );
        assert!(!err.is_transient());
        // The named lock is not left behind.
        let free: Option<i64> = conn
            .query_first(
                "SELECT IS_FREE_LOCK(CONCAT('iotflow:partitions:', DATABASE(), '.iot_data'))",
            )
            .await
            .unwrap();
        assert_eq!(free, Some(1));
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_held_partition_lock_times_out_as_a_transient_error() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts.clone()).await;
        apply_schema(&mut conn).await;
        let mut other = connect(opts).await;
        let held: Option<i64> = other
            .query_first(
                "SELECT GET_LOCK(CONCAT('iotflow:partitions:', DATABASE(), '.iot_data'), 5)",
            )
            .await
            .unwrap();
        assert_eq!(held, Some(1));

        let mut manager =
            PartitionManager::new("iot_data").with_lock_timeout(Duration::from_secs(1));
        let err = manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap_err();
        assert!(matches!(err, PartitionError::LockTimeout { .. }), "{err}");
        assert!(err.is_transient());

        other
            .query_drop("DO RELEASE_LOCK(CONCAT('iotflow:partitions:', DATABASE(), '.iot_data'))")
            .await
            .unwrap();
        manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap();
        assert_eq!(manager.partitions_created(), 1);
        other.disconnect().await.unwrap();
        conn.disconnect().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_alter_blocked_by_a_long_query_gives_up_with_a_transient_error() {
    with_scratch_db(|opts| async move {
        let mut conn = connect(opts.clone()).await;
        apply_schema(&mut conn).await;
        let before: u64 = conn
            .query_first("SELECT @@SESSION.lock_wait_timeout")
            .await
            .unwrap()
            .unwrap();

        // An open transaction that read the table holds a metadata lock until it ends.
        let mut reader = connect(opts).await;
        reader.query_drop("START TRANSACTION").await.unwrap();
        reader
            .query_drop("SELECT COUNT(*) FROM iot_data")
            .await
            .unwrap();

        let mut manager =
            PartitionManager::new("iot_data").with_ddl_lock_wait_timeout(Duration::from_secs(1));
        let started = std::time::Instant::now();
        let err = manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("REORGANIZE PARTITION"), "{err}");

        // The session is left as it was: its lock_wait_timeout and no named lock.
        let after: u64 = conn
            .query_first("SELECT @@SESSION.lock_wait_timeout")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(after, before);
        let free: Option<i64> = conn
            .query_first(
                "SELECT IS_FREE_LOCK(CONCAT('iotflow:partitions:', DATABASE(), '.iot_data'))",
            )
            .await
            .unwrap();
        assert_eq!(free, Some(1));

        reader.query_drop("COMMIT").await.unwrap();
        manager
            .ensure_days(&mut conn, [day(2025, 4, 10)])
            .await
            .unwrap();
        assert_eq!(manager.partitions_created(), 1);
        reader.disconnect().await.unwrap();
        conn.disconnect().await.unwrap();
    })
    .await;
}
