//! The rollup transaction: after a batch of readings is stored in `iot_data`, every bucket,
//! heat-map cell and day track the batch touched is brought up to date in one MySQL
//! transaction (schemas/mysql/rollups.sql).
//!
//! # Exact under reordering and replays
//!
//! Each row is the aggregate of a set of stored readings, and it records the greatest reading
//! key `(event_time, partition, offset)` of that set. A batch's readings of one bucket that
//! all come after that key cannot be counted yet: they are added. Otherwise (a late reading, or
//! one Kafka delivers again after a restart) the bucket is recomputed from what is stored
//! (minutes from `iot_data`, hours from minutes, days from hours), which is the set every row
//! converges to. Readings stored but not yet counted belong to a batch whose rollup
//! transaction had not committed, so their offsets were not committed either: they come again
//! and are counted then. Hence after every commit each row is the aggregate of readings that
//! are in `iot_data`, and once the sink has caught up, of all of them.
//!
//! # Concurrency
//!
//! A device's readings normally come from one Kafka partition, so one worker. When they do
//! not (an unkeyed producer), two workers may update one bucket at once: each transaction
//! first locks its rows (an `INSERT ... ON DUPLICATE KEY UPDATE` of every key, in key order)
//! and reads at READ COMMITTED, so the second waits for the first and then sees its readings.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::NaiveDateTime;
use iotflow_geo::{geohash, Stop, TrackPoint, TrackSummary};
use iotflow_sink::SinkError;
use iotflow_sink_mysql::encoder::{push_datetime, push_decimal, push_str_literal};
use iotflow_sink_mysql::partitions::PartitionManager;
use iotflow_sink_mysql::retry::classify;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::agg::{Agg, Grain, Key, Pt};

/// The rollup tables, as named in schemas/mysql/rollups.sql.
pub const TABLES: [&str; 6] = [
    "iot_rollup_minute",
    "iot_rollup_hour",
    "iot_rollup_day",
    "iot_heat_hour",
    "iot_tracks",
    "iot_track_stops",
];

/// The table of `grain`'s rollup.
pub fn table(grain: Grain) -> &'static str {
    match grain {
        Grain::Minute => TABLES[0],
        Grain::Hour => TABLES[1],
        Grain::Day => TABLES[2],
    }
}

/// The DDL of every rollup table, for `mysql.create_table`.
pub const MYSQL_DDL: &str = include_str!("../../../schemas/mysql/rollups.sql");

/// Most keys named in one statement.
const CHUNK: usize = 500;

/// One device's bucket key.
type BucketKey = (String, NaiveDateTime);

/// A bucket's final aggregate after a transaction (what the ClickHouse copy gets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRow {
    /// Which rollup.
    pub grain: Grain,
    /// Device.
    pub pboxid: String,
    /// Bucket start.
    pub bucket: NaiveDateTime,
    /// Its aggregate.
    pub agg: Agg,
}

/// What one transaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Buckets (all grains), heat-map device-hours and day tracks brought up to date.
    pub updated: usize,
    /// Of those, recomputed from stored rows (late or replayed readings) rather than added to.
    pub recomputed: usize,
    /// The final aggregates of the buckets.
    pub rows: Vec<BucketRow>,
}

/// Stop detection parameters and tile size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Geohash length of a heat-map tile.
    pub precision: usize,
    /// Stay radius, metres.
    pub stop_radius_m: f64,
    /// Shortest stop, ms.
    pub stop_min_ms: i64,
}

/// Brings the rollups of `points` (readings just stored in `readings_table`) up to date.
pub struct Store {
    pool: Pool,
    readings_table: String,
    params: Params,
    partitions: Vec<PartitionManager>,
}

impl Store {
    /// A store writing through `pool`, reading recomputations from `readings_table`.
    pub fn new(pool: Pool, readings_table: &str, params: Params) -> Store {
        Store {
            pool,
            readings_table: readings_table.to_string(),
            params,
            partitions: TABLES
                .iter()
                .map(|t| {
                    PartitionManager::new(*t).with_column(if t.starts_with("iot_track") {
                        "day"
                    } else {
                        "bucket"
                    })
                })
                .collect(),
        }
    }

    /// One transaction for `points` (any order, any devices).
    pub async fn apply(&mut self, points: &[Pt]) -> Result<Applied, SinkError> {
        if points.is_empty() {
            return Ok(Applied::default());
        }
        let mut conn = self
            .pool
            .get_conn()
            .await
            .map_err(|e| classify("connecting to MySQL for the rollups", &e))?;
        let days: std::collections::BTreeSet<_> = points.iter().map(|p| p.at.date()).collect();
        for m in &mut self.partitions {
            let table = m.table().to_string();
            m.ensure_days(&mut conn, days.iter().copied())
                .await
                .map_err(|e| e.into_sink_error(&format!("creating day partitions of `{table}`")))?;
        }
        let run = |e: mysql_async::Error| classify("updating the rollups", &e);
        conn.query_drop("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(run)?;
        conn.query_drop("START TRANSACTION").await.map_err(run)?;
        let result = self.transaction(&mut conn, points).await;
        match result {
            Ok(applied) => {
                conn.query_drop("COMMIT").await.map_err(run)?;
                Ok(applied)
            }
            Err(e) => {
                let _ = conn.query_drop("ROLLBACK").await;
                Err(e)
            }
        }
    }

    async fn transaction(&self, conn: &mut Conn, points: &[Pt]) -> Result<Applied, SinkError> {
        let mut sorted: Vec<&Pt> = points.iter().collect();
        sorted.sort_by(|a, b| (&a.pboxid, a.key()).cmp(&(&b.pboxid, b.key())));
        let mut by: BTreeMap<Grain, BTreeMap<BucketKey, Vec<&Pt>>> = BTreeMap::new();
        for grain in Grain::ALL {
            let m = by.entry(grain).or_default();
            for p in &sorted {
                m.entry((p.pboxid.clone(), grain.bucket(p.at)))
                    .or_default()
                    .push(p);
            }
        }
        // Lock every row this transaction will write, in one global order: grain, then key.
        for grain in Grain::ALL {
            lock(conn, table(grain), "bucket", by[&grain].keys()).await?;
        }
        lock(conn, "iot_tracks", "day", by[&Grain::Day].keys()).await?;

        let mut applied = Applied::default();
        for grain in Grain::ALL {
            let buckets = &by[&grain];
            let stored = load_aggs(conn, table(grain), buckets.keys()).await?;
            let mut out: BTreeMap<BucketKey, Agg> = BTreeMap::new();
            let mut stale: Vec<BucketKey> = Vec::new();
            // Heat-map cells added to (hour buckets counted incrementally).
            let mut heat_add: BTreeMap<(NaiveDateTime, String, String), u64> = BTreeMap::new();
            for (key, pts) in buckets {
                match stored.get(key) {
                    Some(s) if pts[0].key() <= s.last_key => stale.push(key.clone()),
                    s => {
                        let mut a = s.cloned().unwrap_or_else(|| Agg::of(pts[0]));
                        let rest = if s.is_some() { &pts[..] } else { &pts[1..] };
                        for p in rest {
                            a.add(p);
                        }
                        out.insert(key.clone(), a);
                        if grain == Grain::Hour {
                            for p in pts {
                                let tile = geohash::encode(p.point(), self.params.precision);
                                *heat_add.entry((key.1, tile, key.0.clone())).or_default() += 1;
                            }
                        }
                    }
                }
            }
            applied.recomputed += stale.len();
            if !stale.is_empty() {
                let recomputed = match grain.finer() {
                    None => aggs_from_readings(conn, &self.readings_table, grain, &stale).await?,
                    Some(finer) => aggs_from_finer(conn, grain, finer, &stale).await?,
                };
                for key in &stale {
                    let a = recomputed.get(key).cloned().ok_or_else(|| {
                        SinkError::Definite(format!(
                            "rollups: no stored readings for device `{}` in the {} of {} \
                             although a batch just stored some (was {} changed by hand?)",
                            key.0,
                            grain.name(),
                            key.1,
                            self.readings_table
                        ))
                    })?;
                    out.insert(key.clone(), a);
                }
            }
            upsert_aggs(conn, table(grain), &out).await?;
            if grain == Grain::Hour {
                self.update_heat(conn, &heat_add, &stale).await?;
                applied.updated += heat_add.len() + stale.len();
            }
            applied.updated += out.len();
            applied
                .rows
                .extend(out.into_iter().map(|((pboxid, bucket), agg)| BucketRow {
                    grain,
                    pboxid,
                    bucket,
                    agg,
                }));
        }
        let (tracks, recomputed) = self.update_tracks(conn, &by[&Grain::Day]).await?;
        applied.updated += tracks;
        applied.recomputed += recomputed;
        Ok(applied)
    }

    /// Adds `add` to the heat map and recomputes the device-hours in `stale` from the stored
    /// readings.
    async fn update_heat(
        &self,
        conn: &mut Conn,
        add: &BTreeMap<(NaiveDateTime, String, String), u64>,
        stale: &[BucketKey],
    ) -> Result<(), SinkError> {
        let mut cells = add.clone();
        for chunk in stale.chunks(CHUNK) {
            let mut sql = String::from("DELETE FROM iot_heat_hour WHERE ");
            key_filter("bucket", chunk.iter(), &mut sql);
            conn.query_drop(&sql)
                .await
                .map_err(|e| classify("recomputing the heat map", &e))?;
            let pts = readings(conn, &self.readings_table, Grain::Hour, chunk).await?;
            for p in pts {
                let tile = geohash::encode(p.point(), self.params.precision);
                *cells
                    .entry((Grain::Hour.bucket(p.at), tile, p.pboxid))
                    .or_default() += 1;
            }
        }
        let cells: Vec<_> = cells.into_iter().collect();
        insert_values(
            conn,
            "iot_heat_hour (bucket, tile, pboxid, readings)",
            &cells,
            " ON DUPLICATE KEY UPDATE readings = readings + VALUES(readings)",
            "updating the heat map",
            |((hour, tile, pboxid), n), sql| {
                push_datetime(*hour, sql);
                sql.push(',');
                push_str_literal(tile, sql);
                sql.push(',');
                push_str_literal(pboxid, sql);
                let _ = write!(sql, ",{n}");
            },
        )
        .await
    }

    /// Brings the day tracks of `days` up to date; returns (tracks updated, of them
    /// recomputed).
    ///
    /// A track's row keeps its running summary (`state`) without its ended stops: those are
    /// rows of `iot_track_stops`, added as they end, so a batch writes a small row per track
    /// however many stops its day has had. A recomputed track replaces its day's stops.
    async fn update_tracks(
        &self,
        conn: &mut Conn,
        days: &BTreeMap<BucketKey, Vec<&Pt>>,
    ) -> Result<(usize, usize), SinkError> {
        let stored = load_tracks(conn, days.keys()).await?;
        let fresh = || TrackSummary::new(self.params.stop_radius_m, self.params.stop_min_ms);
        // (summary since the stored state, key of its last point, stops ended before it).
        let mut out: BTreeMap<BucketKey, (TrackSummary, Key, u64)> = BTreeMap::new();
        let mut stale = Vec::new();
        for (key, pts) in days {
            let resumable = match stored.get(key) {
                None => Some((fresh(), 0)),
                Some(t) => (t.summary.radius_m == self.params.stop_radius_m
                    && t.summary.min_stop_ms == self.params.stop_min_ms
                    && pts[0].key() > t.last)
                    .then(|| (t.summary.clone(), t.closed)),
            };
            match resumable {
                Some((mut summary, closed)) => {
                    for p in pts {
                        summary.push(track_point(p));
                    }
                    out.insert(key.clone(), (summary, pts[pts.len() - 1].key(), closed));
                }
                None => stale.push(key.clone()),
            }
        }
        let recomputed = stale.len();
        for chunk in stale.chunks(CHUNK) {
            let mut sql = String::from("DELETE FROM iot_track_stops WHERE ");
            key_filter("day", chunk.iter(), &mut sql);
            conn.query_drop(&sql)
                .await
                .map_err(|e| classify("recomputing the stops of day tracks", &e))?;
            let mut pts = readings(conn, &self.readings_table, Grain::Day, chunk).await?;
            pts.sort_by(|a, b| (&a.pboxid, a.key()).cmp(&(&b.pboxid, b.key())));
            let mut at = 0;
            while at < pts.len() {
                let device = pts[at].pboxid.clone();
                let day = Grain::Day.bucket(pts[at].at);
                let mut summary = fresh();
                let mut last = pts[at].key();
                while at < pts.len()
                    && pts[at].pboxid == device
                    && Grain::Day.bucket(pts[at].at) == day
                {
                    summary.push(track_point(&pts[at]));
                    last = pts[at].key();
                    at += 1;
                }
                out.insert((device, day), (summary, last, 0));
            }
        }
        let ended: Vec<(&BucketKey, &Stop)> = out
            .iter()
            .flat_map(|(key, (s, _, _))| s.closed.iter().map(move |stop| (key, stop)))
            .collect();
        insert_values(
            conn,
            "iot_track_stops (pboxid, day, from_time, to_time, lat, lon)",
            &ended,
            " ON DUPLICATE KEY UPDATE to_time = VALUES(to_time), lat = VALUES(lat), lon = VALUES(lon)",
            "writing the stops of day tracks",
            |((pboxid, day), stop), sql| {
                push_str_literal(pboxid, sql);
                sql.push(',');
                push_datetime(*day, sql);
                sql.push(',');
                push_datetime(from_ms(stop.from_ms), sql);
                sql.push(',');
                push_datetime(from_ms(stop.to_ms), sql);
                let _ = write!(sql, ",{},{}", finite(stop.at.lat), finite(stop.at.lon));
            },
        )
        .await?;
        let rows: Vec<_> = out.into_iter().collect();
        insert_values(
            conn,
            "iot_tracks (pboxid, day, points, distance_m, stops, first_time, last_time, \
             last_partition, last_offset, state)",
            &rows,
            " ON DUPLICATE KEY UPDATE points = VALUES(points), distance_m = VALUES(distance_m), \
             stops = VALUES(stops), first_time = VALUES(first_time), \
             last_time = VALUES(last_time), last_partition = VALUES(last_partition), \
             last_offset = VALUES(last_offset), state = VALUES(state)",
            "updating the day tracks",
            |((pboxid, day), (s, last, closed)), sql| {
                push_str_literal(pboxid, sql);
                sql.push(',');
                push_datetime(*day, sql);
                let _ = write!(
                    sql,
                    ",{},{},{},",
                    s.points,
                    finite(s.distance_m),
                    closed + s.stops().len() as u64
                );
                match s.first {
                    Some(f) => push_datetime(from_ms(f.at_ms), sql),
                    None => sql.push_str("NULL"),
                }
                sql.push(',');
                push_datetime(last.0, sql);
                let _ = write!(sql, ",{},{},", last.1, last.2);
                push_str_literal(&state_json(s, closed + s.closed.len() as u64), sql);
            },
        )
        .await?;
        Ok((rows.len(), recomputed))
    }
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Milliseconds of a local wall time (read as UTC: only differences and round trips matter).
pub fn to_ms(at: NaiveDateTime) -> i64 {
    at.and_utc().timestamp_millis()
}

/// The wall time of [`to_ms`]'s milliseconds.
pub fn from_ms(ms: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc()
}

fn track_point(p: &Pt) -> TrackPoint {
    TrackPoint {
        at_ms: to_ms(p.at),
        p: p.point(),
    }
}

/// A stop as `/api/track` lists it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopJson {
    /// First point's time, `YYYY-MM-DD HH:MM:SS.fff`.
    pub from: String,
    /// Last point's time.
    pub to: String,
    /// Where the stay began.
    pub lat: f64,
    /// Where the stay began.
    pub lon: f64,
}

impl StopJson {
    fn of(s: &Stop) -> StopJson {
        StopJson {
            from: from_ms(s.from_ms)
                .format("%Y-%m-%d %H:%M:%S%.3f")
                .to_string(),
            to: from_ms(s.to_ms).format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            lat: s.at.lat,
            lon: s.at.lon,
        }
    }
}

/// The stay in progress of a stored `state`, when it is already long enough to be a stop
/// (the ended stops are rows of `iot_track_stops`).
pub fn open_stop(state: &str) -> Option<StopJson> {
    let (s, _) = parse_state(state)?;
    s.stops().first().map(StopJson::of)
}

/// [`TrackSummary`] as stored in `iot_tracks.state`: without its ended stops (rows of
/// `iot_track_stops`), with their count.
#[derive(Serialize, Deserialize)]
struct StateJson {
    radius_m: f64,
    min_stop_ms: i64,
    points: u64,
    distance_m: f64,
    /// `[ms, lat, lon]`.
    first: Option<(i64, f64, f64)>,
    last: Option<(i64, f64, f64)>,
    stay: Option<(i64, f64, f64)>,
    /// Stops ended so far this day.
    closed: u64,
}

fn state_json(s: &TrackSummary, closed: u64) -> String {
    let tp = |p: Option<TrackPoint>| p.map(|p| (p.at_ms, p.p.lat, p.p.lon));
    serde_json::to_string(&StateJson {
        radius_m: s.radius_m,
        min_stop_ms: s.min_stop_ms,
        points: s.points,
        distance_m: finite(s.distance_m),
        first: tp(s.first),
        last: tp(s.last),
        stay: tp(s.stay),
        closed,
    })
    .unwrap_or_default()
}

/// The summary a stored state resumes (its `closed` list empty) and its count of ended stops.
fn parse_state(text: &str) -> Option<(TrackSummary, u64)> {
    let j: StateJson = serde_json::from_str(text).ok()?;
    let tp = |p: Option<(i64, f64, f64)>| {
        p.map(|(at_ms, lat, lon)| TrackPoint {
            at_ms,
            p: iotflow_geo::Point::new(lat, lon),
        })
    };
    Some((
        TrackSummary {
            radius_m: j.radius_m,
            min_stop_ms: j.min_stop_ms,
            points: j.points,
            first: tp(j.first),
            last: tp(j.last),
            stay: tp(j.stay),
            distance_m: j.distance_m,
            closed: Vec::new(),
        },
        j.closed,
    ))
}

/// `(k1 = 'a' AND k2 = '...') OR ...` for `keys`.
fn key_filter<'a>(column: &str, keys: impl IntoIterator<Item = &'a BucketKey>, sql: &mut String) {
    for (i, (pboxid, at)) in keys.into_iter().enumerate() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str("(pboxid = ");
        push_str_literal(pboxid, sql);
        let _ = write!(sql, " AND {column} = ");
        push_datetime(*at, sql);
        sql.push(')');
    }
}

/// `(pboxid = 'a' AND column >= start AND column < end) OR ...`: the `grain` buckets `keys`.
fn range_filter(column: &str, grain: Grain, keys: &[BucketKey], sql: &mut String) {
    for (i, (pboxid, start)) in keys.iter().enumerate() {
        if i > 0 {
            sql.push_str(" OR ");
        }
        sql.push_str("(pboxid = ");
        push_str_literal(pboxid, sql);
        let _ = write!(sql, " AND {column} >= ");
        push_datetime(*start, sql);
        let _ = write!(sql, " AND {column} < ");
        push_datetime(grain.next(*start), sql);
        sql.push(')');
    }
}

/// Takes the row lock of every key (creating empty rows for new ones).
async fn lock<'a>(
    conn: &mut Conn,
    table: &str,
    column: &str,
    keys: impl Iterator<Item = &'a BucketKey>,
) -> Result<(), SinkError> {
    let keys: Vec<&BucketKey> = keys.collect();
    insert_values(
        conn,
        &format!("{table} (pboxid, {column})"),
        &keys,
        " ON DUPLICATE KEY UPDATE pboxid = pboxid",
        &format!("locking rows of `{table}`"),
        |(pboxid, at), sql| {
            push_str_literal(pboxid, sql);
            sql.push(',');
            push_datetime(*at, sql);
        },
    )
    .await
}

/// Inserts `rows` in statements of at most [`CHUNK`] rows, `INSERT INTO {into} VALUES (…), …`
/// followed by `tail`; `row` writes one row's values (without the parentheses). `context` names
/// the work in an error.
async fn insert_values<T: Sync>(
    conn: &mut Conn,
    into: &str,
    rows: &[T],
    tail: &str,
    context: &str,
    row: impl Fn(&T, &mut String),
) -> Result<(), SinkError> {
    for chunk in rows.chunks(CHUNK) {
        let mut sql = format!("INSERT INTO {into} VALUES ");
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            row(r, &mut sql);
            sql.push(')');
        }
        sql.push_str(tail);
        conn.query_drop(&sql)
            .await
            .map_err(|e| classify(context, &e))?;
    }
    Ok(())
}

type AggRow = (
    String,
    NaiveDateTime,
    u64,
    Decimal,
    Decimal,
    Decimal,
    Decimal,
    Option<NaiveDateTime>,
    Option<NaiveDateTime>,
    i32,
    i64,
);

const AGG_COLUMNS: &str = "pboxid, bucket, readings, metric_min, metric_max, metric_sum, \
                           metric_last, first_time, last_time, last_partition, last_offset";

fn agg_of(r: AggRow) -> Option<(BucketKey, Agg)> {
    let (pboxid, bucket, readings, min, max, sum, last, first_at, last_at, part, off) = r;
    if readings == 0 {
        return None;
    }
    Some((
        (pboxid, bucket),
        Agg {
            readings,
            min,
            max,
            sum,
            last,
            last_key: (last_at?, part, off),
            first_at: first_at?,
        },
    ))
}

/// The stored aggregates of `keys` (rows without readings are absent).
async fn load_aggs<'a>(
    conn: &mut Conn,
    table: &str,
    keys: impl Iterator<Item = &'a BucketKey>,
) -> Result<BTreeMap<BucketKey, Agg>, SinkError> {
    let keys: Vec<&BucketKey> = keys.collect();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(CHUNK) {
        let mut sql = format!("SELECT {AGG_COLUMNS} FROM {table} WHERE ");
        key_filter("bucket", chunk.iter().copied(), &mut sql);
        let rows: Vec<AggRow> = conn
            .query(&sql)
            .await
            .map_err(|e| classify(&format!("reading `{table}`"), &e))?;
        out.extend(rows.into_iter().filter_map(agg_of));
    }
    Ok(out)
}

/// The stored readings of the `grain` buckets `keys`.
async fn readings(
    conn: &mut Conn,
    readings_table: &str,
    grain: Grain,
    keys: &[BucketKey],
) -> Result<Vec<Pt>, SinkError> {
    let mut sql = format!(
        "SELECT pboxid, event_time, src_partition, src_offset, metric, latitude, longitude \
         FROM {readings_table} WHERE "
    );
    range_filter("event_time", grain, keys, &mut sql);
    type R = (String, NaiveDateTime, i32, i64, Decimal, Decimal, Decimal);
    let rows: Vec<R> = conn
        .query(&sql)
        .await
        .map_err(|e| classify(&format!("reading `{readings_table}` for the rollups"), &e))?;
    Ok(rows
        .into_iter()
        .map(|(pboxid, at, partition, offset, metric, lat, lon)| Pt {
            pboxid,
            at,
            partition,
            offset,
            metric,
            lat,
            lon,
        })
        .collect())
}

/// The aggregates of `keys` recomputed from the stored readings.
async fn aggs_from_readings(
    conn: &mut Conn,
    readings_table: &str,
    grain: Grain,
    keys: &[BucketKey],
) -> Result<BTreeMap<BucketKey, Agg>, SinkError> {
    let mut out: BTreeMap<BucketKey, Agg> = BTreeMap::new();
    for chunk in keys.chunks(CHUNK) {
        for p in readings(conn, readings_table, grain, chunk).await? {
            let key = (p.pboxid.clone(), grain.bucket(p.at));
            match out.get_mut(&key) {
                Some(a) => a.add(&p),
                None => {
                    out.insert(key, Agg::of(&p));
                }
            }
        }
    }
    Ok(out)
}

/// The aggregates of `keys` recomputed from the `finer` rollup (already up to date in this
/// transaction).
async fn aggs_from_finer(
    conn: &mut Conn,
    grain: Grain,
    finer: Grain,
    keys: &[BucketKey],
) -> Result<BTreeMap<BucketKey, Agg>, SinkError> {
    let from = table(finer);
    let mut out: BTreeMap<BucketKey, Agg> = BTreeMap::new();
    for chunk in keys.chunks(CHUNK) {
        let mut sql = format!("SELECT {AGG_COLUMNS} FROM {from} WHERE ");
        range_filter("bucket", grain, chunk, &mut sql);
        let rows: Vec<AggRow> = conn
            .query(&sql)
            .await
            .map_err(|e| classify(&format!("reading `{from}`"), &e))?;
        for ((pboxid, at), a) in rows.into_iter().filter_map(agg_of) {
            let key = (pboxid, grain.bucket(at));
            match out.get_mut(&key) {
                Some(b) => b.merge(&a),
                None => {
                    out.insert(key, a);
                }
            }
        }
    }
    Ok(out)
}

async fn upsert_aggs(
    conn: &mut Conn,
    table: &str,
    aggs: &BTreeMap<BucketKey, Agg>,
) -> Result<(), SinkError> {
    let rows: Vec<_> = aggs.iter().collect();
    insert_values(
        conn,
        &format!(
            "{table} (pboxid, bucket, readings, metric_min, metric_max, metric_sum, metric_avg, \
             metric_last, first_time, last_time, last_partition, last_offset)"
        ),
        &rows,
        " ON DUPLICATE KEY UPDATE readings = VALUES(readings), \
         metric_min = VALUES(metric_min), metric_max = VALUES(metric_max), \
         metric_sum = VALUES(metric_sum), metric_avg = VALUES(metric_avg), \
         metric_last = VALUES(metric_last), first_time = VALUES(first_time), \
         last_time = VALUES(last_time), last_partition = VALUES(last_partition), \
         last_offset = VALUES(last_offset)",
        &format!("writing `{table}`"),
        |((pboxid, bucket), a), sql| {
            push_str_literal(pboxid, sql);
            sql.push(',');
            push_datetime(*bucket, sql);
            let _ = write!(sql, ",{},", a.readings);
            for d in [a.min, a.max, a.sum, a.avg(), a.last] {
                push_decimal(d, sql);
                sql.push(',');
            }
            push_datetime(a.first_at, sql);
            sql.push(',');
            push_datetime(a.last_key.0, sql);
            let _ = write!(sql, ",{},{}", a.last_key.1, a.last_key.2);
        },
    )
    .await
}

/// A stored track: its summary without ended stops, their count, the key of its last point.
struct StoredTrack {
    summary: TrackSummary,
    closed: u64,
    last: Key,
}

/// The stored tracks of `keys`.
async fn load_tracks<'a>(
    conn: &mut Conn,
    keys: impl Iterator<Item = &'a BucketKey>,
) -> Result<BTreeMap<BucketKey, StoredTrack>, SinkError> {
    let keys: Vec<&BucketKey> = keys.collect();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(CHUNK) {
        let mut sql = String::from(
            "SELECT pboxid, day, points, last_time, last_partition, last_offset, state \
             FROM iot_tracks WHERE ",
        );
        key_filter("day", chunk.iter().copied(), &mut sql);
        type R = (
            String,
            NaiveDateTime,
            u64,
            Option<NaiveDateTime>,
            i32,
            i64,
            Option<String>,
        );
        let rows: Vec<R> = conn
            .query(&sql)
            .await
            .map_err(|e| classify("reading `iot_tracks`", &e))?;
        for (pboxid, day, points, last_at, part, off, state) in rows {
            if points == 0 {
                continue;
            }
            // A state that does not parse (edited by hand) is recomputed from the readings:
            // its parameters match no configuration.
            let (summary, closed) = state
                .as_deref()
                .and_then(parse_state)
                .unwrap_or_else(|| (TrackSummary::new(f64::NAN, -1), 0));
            let last = (last_at.unwrap_or(NaiveDateTime::MAX), part, off);
            out.insert(
                (pboxid, day),
                StoredTrack {
                    summary,
                    closed,
                    last,
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_track_state_survives_its_json() {
        let mut s = TrackSummary::new(50.0, 300_000);
        for i in 0..1000 {
            s.push(TrackPoint {
                at_ms: i * 1000,
                p: iotflow_geo::Point::new(31.0 + (i / 400) as f64 * 0.01, 121.0),
            });
        }
        assert_eq!(s.closed.len(), 2);
        let (resumed, closed) = parse_state(&state_json(&s, 7)).unwrap();
        assert_eq!(closed, 7);
        assert_eq!(
            resumed,
            TrackSummary {
                closed: Vec::new(),
                ..s
            }
        );
        assert_eq!(
            from_ms(to_ms(NaiveDateTime::MIN.max(from_ms(5)))),
            from_ms(5)
        );
    }
}
