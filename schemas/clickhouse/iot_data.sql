-- iot_data: one row per valid IoT reading, written by the iotflow ClickHouse sink.
-- Same columns as schemas/mysql/iot_data.sql, adapted to ClickHouse 18.16 (the oldest server we
-- support; Debian's package) and still valid on modern ClickHouse. No database name: run it in
-- the target database (HTTP: ?database=DB, clickhouse-client: --database DB).
--
-- Times
--   18.16 has no DateTime64, so every millisecond timestamp is split into a DateTime (whole
--   seconds) and a UInt16 column with the milliseconds (0..999):
--     event_time + event_ms, kafka_ts + kafka_ms.
--   The full value is toUInt64(event_time) * 1000 + event_ms. DateTime stays the type of the
--   partition and sorting key (toYYYYMMDD, range filters, all date functions work unchanged),
--   and the UInt16 column costs almost nothing after compression. The columns are declared
--   DateTime('UTC'): event_time carries the reading's local wall time in the configured zone
--   written as if it were UTC (same meaning as the MySQL DATETIME(3)), so toYYYYMMDD(event_time)
--   is the local day, whatever the server's time zone is. kafka_ts is real UTC.
--   ingested_at is the server time of the insert, whole seconds (DEFAULT now()).
--
-- Idempotency
--   ReplacingMergeTree without a version column: rows with the same sorting key
--   (pboxid, event_time, src_partition, src_offset) are collapsed into one when their parts are
--   merged. A reading Kafka delivers again has the same Kafka coordinates and, being parsed from
--   the same message, the same pboxid and event_time, hence the same key and the same day
--   partition. The merge happens at an unspecified time, so until then count() may include
--   duplicates; exact answers need SELECT ... FINAL (or OPTIMIZE TABLE iot_data FINAL first).
--   Which copy survives is not specified (they differ in ingested_at only). See docs/clickhouse.md.
--
-- Dropping old days
--   ALTER TABLE iot_data DROP PARTITION 20250410
--
-- This file is safe to run again: it only creates what is missing.

CREATE TABLE IF NOT EXISTS iot_data (
    event_time      DateTime('UTC')            COMMENT 'reading time (whole seconds), local wall time in the configured zone',
    event_ms        UInt16                     COMMENT 'milliseconds of event_time, 0..999',
    pboxid          String                     COMMENT 'device id',
    metric          Decimal(24, 8),
    latitude        Decimal(11, 8),
    longitude       Decimal(11, 8),
    company         Nullable(String),
    site            Nullable(String),
    line            Nullable(String),
    device_name     Nullable(String),
    model           Nullable(String),
    device_status   Nullable(String),
    work_threshold  Nullable(Decimal(24, 8)),
    src_partition   Int32                      COMMENT 'Kafka partition of the reading',
    src_offset      Int64                      COMMENT 'Kafka offset of the reading',
    kafka_ts        Nullable(DateTime('UTC'))  COMMENT 'Kafka message timestamp (whole seconds), UTC',
    kafka_ms        Nullable(UInt16)           COMMENT 'milliseconds of kafka_ts, 0..999',
    ingested_at     DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(event_time)
ORDER BY (pboxid, event_time, src_partition, src_offset)
