-- Rollups, heat-map tiles and day tracks kept by the MySQL sink when [rollups] enabled = true
-- (docs/rollups.md, docs/geo.md). The sink creates these tables at start when
-- mysql.create_table is on (the default); this file is that DDL, safe to run again.
--
-- All of them are derived from `iot_data`: after each batch of readings is stored, one
-- transaction updates every bucket the batch touched. A reading later than everything a bucket
-- already counts is added to it; any other (a late reading, or one delivered again after a
-- restart) makes the bucket be recomputed from what is stored, so the rows are always the
-- aggregate of exactly the readings `iot_data` holds, whatever the order or the replays.
--
-- Times are local wall time in the configured zone, like iot_data.event_time. Each table has
-- one partition per day (created by the sink as for iot_data; drop old days with
-- ALTER TABLE ... DROP PARTITION pYYYYMMDD). A bucket is [bucket, next bucket).
--
-- metric_last is the metric of the bucket's last reading: greatest event_time, ties broken by
-- the greatest (src_partition, src_offset), which last_time / last_partition / last_offset
-- name. metric_avg is metric_sum / readings rounded to 8 places.

CREATE TABLE IF NOT EXISTS iot_rollup_minute (
    pboxid          VARCHAR(64)     NOT NULL,
    bucket          DATETIME        NOT NULL COMMENT 'start of the bucket: minute, hour or day by table',
    readings        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    metric_min      DECIMAL(24,8)   NOT NULL DEFAULT 0,
    metric_max      DECIMAL(24,8)   NOT NULL DEFAULT 0,
    metric_sum      DECIMAL(38,8)   NOT NULL DEFAULT 0,
    metric_avg      DECIMAL(24,8)   NOT NULL DEFAULT 0,
    metric_last     DECIMAL(24,8)   NOT NULL DEFAULT 0,
    first_time      DATETIME(3)     NULL,
    last_time       DATETIME(3)     NULL,
    last_partition  INT             NOT NULL DEFAULT 0,
    last_offset     BIGINT          NOT NULL DEFAULT 0,
    updated_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (pboxid, bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
  COMMENT='per device per bucket: count, min, max, sum, avg, last of metric'
PARTITION BY RANGE COLUMNS(bucket) (PARTITION pmax VALUES LESS THAN (MAXVALUE));

-- The hour and day rollups have the minute rollup's columns, keys and day partitions.
CREATE TABLE IF NOT EXISTS iot_rollup_hour LIKE iot_rollup_minute;

CREATE TABLE IF NOT EXISTS iot_rollup_day LIKE iot_rollup_minute;

-- The heat map: readings per (hour, geohash tile, device). Devices in a tile in an hour are
-- its rows; `SELECT tile, COUNT(*) AS devices, SUM(readings) FROM iot_heat_hour WHERE bucket
-- = ? GROUP BY tile` is the map of one hour (COUNT(DISTINCT pboxid) over several hours).
-- The tile is the reading's geohash at rollups.geohash_precision; changing the precision
-- applies to hours recomputed or counted after the change.
CREATE TABLE IF NOT EXISTS iot_heat_hour (
    bucket          DATETIME        NOT NULL COMMENT 'start of the hour',
    tile            VARCHAR(12)     NOT NULL COMMENT 'geohash of the readings',
    pboxid          VARCHAR(64)     NOT NULL,
    readings        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, tile, pboxid),
    KEY idx_pbox_bucket (pboxid, bucket)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
  COMMENT='readings per hour, geohash tile and device'
PARTITION BY RANGE COLUMNS(bucket) (PARTITION pmax VALUES LESS THAN (MAXVALUE));

-- The track of a device through a day: points, metres travelled (great circle, point to point
-- in time order), stops (stays within rollups.stop_radius_m of where the stay began for at
-- least rollups.stop_min_secs; `stops` counts the stay in progress once it is long enough).
-- `state` is the running summary the next batch resumes from (JSON, without the ended stops).
-- The points themselves are iot_data's rows of that device and day (the web UI's /api/track
-- reads them from there).
CREATE TABLE IF NOT EXISTS iot_tracks (
    pboxid          VARCHAR(64)     NOT NULL,
    day             DATETIME        NOT NULL COMMENT 'start of the day',
    points          BIGINT UNSIGNED NOT NULL DEFAULT 0,
    distance_m      DOUBLE          NOT NULL DEFAULT 0,
    stops           INT UNSIGNED    NOT NULL DEFAULT 0,
    first_time      DATETIME(3)     NULL,
    last_time       DATETIME(3)     NULL,
    last_partition  INT             NOT NULL DEFAULT 0,
    last_offset     BIGINT          NOT NULL DEFAULT 0,
    state           TEXT            NULL,
    updated_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (pboxid, day)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
  COMMENT='per device per day: track length and stops'
PARTITION BY RANGE COLUMNS(day) (PARTITION pmax VALUES LESS THAN (MAXVALUE));

-- The ended stops of the day tracks, one row each, added as they end (a batch writes only the
-- stops it ended, however many the day has had); a recomputed track replaces its day's rows.
-- The stay in progress is in iot_tracks.state.
CREATE TABLE IF NOT EXISTS iot_track_stops (
    pboxid          VARCHAR(64)     NOT NULL,
    day             DATETIME        NOT NULL COMMENT 'start of the day',
    from_time       DATETIME(3)     NOT NULL COMMENT 'first point of the stay',
    to_time         DATETIME(3)     NOT NULL COMMENT 'last point of the stay',
    lat             DOUBLE          NOT NULL COMMENT 'where the stay began',
    lon             DOUBLE          NOT NULL,
    PRIMARY KEY (pboxid, day, from_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
  COMMENT='ended stops of the day tracks'
PARTITION BY RANGE COLUMNS(day) (PARTITION pmax VALUES LESS THAN (MAXVALUE));
