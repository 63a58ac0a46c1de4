//! The web UI's JSON API over the rollup tables (served by the streaming job with
//! `[rollups] enabled`; docs/geo.md, docs/rollups.md):
//!
//! * `/api/heatmap?hour=YYYY-MM-DD HH` or `?day=YYYY-MM-DD` (default: the latest hour with
//!   readings): per geohash tile its bounds, devices and readings;
//! * `/api/tracks?day=YYYY-MM-DD` (default: the latest day): the day's tracks, longest first;
//! * `/api/track?device=ID&day=YYYY-MM-DD` (default: the device's latest day): one track, its
//!   stops and its path (at most [`MAX_PATH_POINTS`] points, evenly thinned, first and last kept);
//! * `/api/rollups?device=ID&grain=minute|hour|day` (default `hour`): the device's latest
//!   buckets, newest first (at most [`MAX_BUCKETS`]).
//!
//! A bad parameter is a JSON `{"error": ...}` naming it; the stores' errors likewise.

use chrono::{NaiveDate, NaiveDateTime};
use iotflow_geo::geohash;
use mysql_async::prelude::Queryable;
use mysql_async::Pool;
use serde_json::{json, Value};

use crate::agg::Grain;

/// Most points of a path.
pub const MAX_PATH_POINTS: usize = 2000;
/// Most buckets of `/api/rollups`.
pub const MAX_BUCKETS: usize = 1440;
/// Most tiles of a heat map.
pub const MAX_TILES: usize = 5000;

/// The value of `key` in a query string (`a=1&b=x%20y`), percent-decoded.
pub fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| decode(v))
    })
}

fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn error(message: String) -> String {
    json!({ "error": message }).to_string()
}

fn time_text(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn day_param(query: &str) -> Result<Option<NaiveDate>, String> {
    match param(query, "day") {
        None => Ok(None),
        Some(d) => NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
            .map(Some)
            .map_err(|_| format!("day `{d}` is not YYYY-MM-DD")),
    }
}

async fn conn(pool: &Pool) -> Result<mysql_async::Conn, String> {
    pool.get_conn().await.map_err(|e| format!("MySQL: {e}"))
}

fn db(e: mysql_async::Error) -> String {
    format!("MySQL: {e}")
}

/// `/api/heatmap`.
pub async fn heatmap(pool: &Pool, query: &str) -> String {
    heatmap_json(pool, query).await.unwrap_or_else(error)
}

async fn heatmap_json(pool: &Pool, query: &str) -> Result<String, String> {
    let mut c = conn(pool).await?;
    let (from, to) = match (param(query, "hour"), day_param(query)?) {
        (Some(h), _) => {
            let t =
                NaiveDateTime::parse_from_str(&format!("{}:00:00", h.trim()), "%Y-%m-%d %H:%M:%S")
                    .map_err(|_| format!("hour `{h}` is not `YYYY-MM-DD HH`"))?;
            (t, Grain::Hour.next(t))
        }
        (None, Some(d)) => {
            let t = d.and_hms_opt(0, 0, 0).expect("midnight");
            (t, Grain::Day.next(t))
        }
        (None, None) => {
            let latest: Option<Option<NaiveDateTime>> = c
                .query_first("SELECT MAX(bucket) FROM iot_heat_hour")
                .await
                .map_err(db)?;
            match latest.flatten() {
                Some(t) => (t, Grain::Hour.next(t)),
                None => return Ok(json!({ "from": null, "to": null, "tiles": [] }).to_string()),
            }
        }
    };
    let rows: Vec<(String, u64, u64)> = c
        .exec(
            format!(
                "SELECT tile, COUNT(DISTINCT pboxid), CAST(SUM(readings) AS UNSIGNED) FROM iot_heat_hour \
                 WHERE bucket >= ? AND bucket < ? GROUP BY tile ORDER BY 3 DESC, tile LIMIT {MAX_TILES}"
            ),
            (from, to),
        )
        .await
        .map_err(db)?;
    let tiles: Vec<Value> = rows
        .into_iter()
        .filter_map(|(tile, devices, readings)| {
            let (sw, ne) = geohash::bounds(&tile)?;
            Some(json!({
                "tile": tile,
                "south": sw.lat, "west": sw.lon, "north": ne.lat, "east": ne.lon,
                "devices": devices,
                "readings": readings,
            }))
        })
        .collect();
    Ok(json!({ "from": time_text(from), "to": time_text(to), "tiles": tiles }).to_string())
}

/// `/api/tracks`.
pub async fn tracks(pool: &Pool, query: &str) -> String {
    tracks_json(pool, query).await.unwrap_or_else(error)
}

async fn tracks_json(pool: &Pool, query: &str) -> Result<String, String> {
    let mut c = conn(pool).await?;
    let day = match day_param(query)? {
        Some(d) => d.and_hms_opt(0, 0, 0).expect("midnight"),
        None => {
            let latest: Option<Option<NaiveDateTime>> = c
                .query_first("SELECT MAX(day) FROM iot_tracks")
                .await
                .map_err(db)?;
            match latest.flatten() {
                Some(d) => d,
                None => return Ok(json!({ "day": null, "tracks": [] }).to_string()),
            }
        }
    };
    let rows: Vec<(String, u64, f64, u64)> = c
        .exec(
            "SELECT pboxid, points, distance_m, stops FROM iot_tracks WHERE day = ? AND points > 0 \
             ORDER BY distance_m DESC, pboxid LIMIT 500",
            (day,),
        )
        .await
        .map_err(db)?;
    let tracks: Vec<Value> = rows
        .into_iter()
        .map(|(d, points, distance, stops)| {
            json!({ "device": d, "points": points, "distance_m": distance, "stops": stops })
        })
        .collect();
    Ok(json!({ "day": day.format("%Y-%m-%d").to_string(), "tracks": tracks }).to_string())
}

/// `/api/track`.
pub async fn track(pool: &Pool, readings_table: &str, query: &str) -> String {
    track_json(pool, readings_table, query)
        .await
        .unwrap_or_else(error)
}

async fn track_json(pool: &Pool, readings_table: &str, query: &str) -> Result<String, String> {
    let device = param(query, "device").ok_or("device is required (`?device=ID`)")?;
    let mut c = conn(pool).await?;
    let day = match day_param(query)? {
        Some(d) => d.and_hms_opt(0, 0, 0).expect("midnight"),
        None => {
            let latest: Option<Option<NaiveDateTime>> = c
                .exec_first(
                    "SELECT MAX(day) FROM iot_tracks WHERE pboxid = ?",
                    (&device,),
                )
                .await
                .map_err(db)?;
            latest
                .flatten()
                .ok_or_else(|| format!("no track of device `{device}`"))?
        }
    };
    type Summary = (u64, f64, Option<String>);
    let summary: Option<Summary> = c
        .exec_first(
            "SELECT points, distance_m, state FROM iot_tracks WHERE pboxid = ? AND day = ?",
            (&device, day),
        )
        .await
        .map_err(db)?;
    let Some((points, distance, state)) = summary.filter(|s| s.0 > 0) else {
        return Err(format!(
            "no track of device `{device}` on {}",
            day.format("%Y-%m-%d")
        ));
    };
    let ended: Vec<(NaiveDateTime, NaiveDateTime, f64, f64)> = c
        .exec(
            "SELECT from_time, to_time, lat, lon FROM iot_track_stops \
             WHERE pboxid = ? AND day = ? ORDER BY from_time",
            (&device, day),
        )
        .await
        .map_err(db)?;
    let mut stops: Vec<Value> = ended
        .into_iter()
        .map(|(from, to, lat, lon)| {
            json!({
                "from": from.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                "to": to.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                "lat": lat,
                "lon": lon,
            })
        })
        .collect();
    if let Some(open) = state.as_deref().and_then(crate::store::open_stop) {
        stops.push(serde_json::to_value(open).unwrap_or(Value::Null));
    }
    let rows: Vec<(NaiveDateTime, f64, f64)> = c
        .exec(
            format!(
                "SELECT event_time, CAST(latitude AS DOUBLE), CAST(longitude AS DOUBLE) FROM {readings_table} \
                 WHERE pboxid = ? AND event_time >= ? AND event_time < ? \
                 ORDER BY event_time, src_partition, src_offset"
            ),
            (&device, day, Grain::Day.next(day)),
        )
        .await
        .map_err(db)?;
    let path: Vec<Value> = thin(&rows, MAX_PATH_POINTS)
        .into_iter()
        .map(|(t, lat, lon)| json!([t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(), lat, lon]))
        .collect();
    Ok(json!({
        "device": device,
        "day": day.format("%Y-%m-%d").to_string(),
        "points": points,
        "distance_m": distance,
        "stops": stops,
        "path": path,
    })
    .to_string())
}

/// At most `max` of `rows`, evenly spaced, the first and the last always kept.
pub fn thin<T: Clone>(rows: &[T], max: usize) -> Vec<T> {
    if rows.len() <= max || max < 2 {
        return rows.to_vec();
    }
    let step = (rows.len() - 1) as f64 / (max - 1) as f64;
    (0..max)
        .map(|i| rows[((i as f64 * step).round() as usize).min(rows.len() - 1)].clone())
        .collect()
}

/// `/api/rollups`.
pub async fn rollups(pool: &Pool, query: &str) -> String {
    rollups_json(pool, query).await.unwrap_or_else(error)
}

async fn rollups_json(pool: &Pool, query: &str) -> Result<String, String> {
    let device = param(query, "device").ok_or("device is required (`?device=ID`)")?;
    let grain = match param(query, "grain") {
        None => Grain::Hour,
        Some(g) => Grain::parse(&g).ok_or_else(|| format!("grain `{g}`: minute, hour or day"))?,
    };
    let mut c = conn(pool).await?;
    type R = (NaiveDateTime, u64, String, String, String, String, String);
    let rows: Vec<R> = c
        .exec(
            format!(
                "SELECT bucket, readings, CAST(metric_min AS CHAR), CAST(metric_max AS CHAR), \
                 CAST(metric_avg AS CHAR), CAST(metric_sum AS CHAR), CAST(metric_last AS CHAR) \
                 FROM {} WHERE pboxid = ? AND readings > 0 ORDER BY bucket DESC LIMIT {MAX_BUCKETS}",
                crate::store::table(grain)
            ),
            (&device,),
        )
        .await
        .map_err(db)?;
    let buckets: Vec<Value> = rows
        .into_iter()
        .map(|(b, n, min, max, avg, sum, last)| {
            json!({ "bucket": time_text(b), "readings": n, "min": min, "max": max,
                    "avg": avg, "sum": sum, "last": last })
        })
        .collect();
    Ok(json!({ "device": device, "grain": grain.name(), "buckets": buckets }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        let q = "device=pbox%2F1&day=2025-04-10&x=a+b&bad=%zz";
        assert_eq!(param(q, "device").as_deref(), Some("pbox/1"));
        assert_eq!(param(q, "x").as_deref(), Some("a b"));
        assert_eq!(param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(param(q, "none"), None);
        assert_eq!(
            day_param("day=10.04.2025").unwrap_err(),
            "day `10.04.2025` is not YYYY-MM-DD"
        );
    }

    #[test]
    fn a_path_is_thinned_evenly_keeping_both_ends() {
        let rows: Vec<u32> = (0..10_001).collect();
        let t = thin(&rows, 2000);
        assert_eq!(t.len(), 2000);
        assert_eq!((t[0], t[1999]), (0, 10_000));
        assert!(t.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(thin(&rows[..5], 2000), vec![0, 1, 2, 3, 4]);
    }
}
