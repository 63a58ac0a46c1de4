-- Copies of the MySQL rollups (schemas/mysql/rollups.sql) in ClickHouse, written by the MySQL
-- sink after each of its rollup transactions when [rollups] clickhouse = true and the
-- ClickHouse sink is on. No database name: run it in the target database. Same columns as
-- MySQL's, times split like iot_data (18.16 has no DateTime64): last_time + last_ms.
--
-- Exact under replays: ReplacingMergeTree(readings). A bucket only ever gains readings (its
-- set of readings grows, and a recomputation reads the same stored set), so of the copies of
-- one (pboxid, bucket) the one with the most readings is the newest and the one kept; until
-- the parts merge, read with FINAL.
-- One statement per table; iotflow runs them one by one.

CREATE TABLE IF NOT EXISTS iot_rollup_minute (
    pboxid          String,
    bucket          DateTime('UTC')  COMMENT 'start of the bucket (minute, hour or day by table), local wall time',
    readings        UInt64,
    metric_min      Decimal(24, 8),
    metric_max      Decimal(24, 8),
    metric_sum      Decimal(38, 8),
    metric_avg      Decimal(24, 8),
    metric_last     Decimal(24, 8),
    last_time       DateTime('UTC'),
    last_ms         UInt16
) ENGINE = ReplacingMergeTree(readings)
PARTITION BY toYYYYMMDD(bucket)
ORDER BY (pboxid, bucket);

-- The hour and day rollups: the same columns and engine.
CREATE TABLE IF NOT EXISTS iot_rollup_hour AS iot_rollup_minute;

CREATE TABLE IF NOT EXISTS iot_rollup_day AS iot_rollup_minute;
