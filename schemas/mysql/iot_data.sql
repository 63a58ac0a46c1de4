-- iot_data: one row per valid IoT reading, written by the iotflow MySQL/MariaDB sink.
--
-- Idempotency
--   The primary key is the reading's Kafka coordinates (src_partition, src_offset) plus
--   event_time, because a unique key on a partitioned table must include the partitioning
--   column. The sink inserts with ON DUPLICATE KEY UPDATE src_offset = src_offset, so a
--   reading that Kafka delivers again after a restart finds its row and changes nothing,
--   while real errors (a value out of range, a string too long) still fail the statement.
--
-- Day partitions
--   The table is partitioned by RANGE COLUMNS(event_time) and starts with the single
--   catch-all partition pmax. Before it writes a batch, the sink gives every day the batch
--   touches its own partition pYYYYMMDD covering exactly that day, splitting pmax (or a
--   multi-day partition made by hand) with ALTER TABLE ... REORGANIZE PARTITION under the
--   named lock iotflow:partitions:DB.iot_data. The pieces around a day are called pmin
--   (no lower bound), pmax (up to MAXVALUE) and pgapYYYYMMDD (other multi-day ranges).
--   They stay empty, because every row goes to its day partition. Any layout made by hand
--   works as a starting point, for example
--     PARTITION p20250410 VALUES LESS THAN ('2025-04-11'),
--     PARTITION p20250411 VALUES LESS THAN ('2025-04-12'),
--     PARTITION pmax VALUES LESS THAN (MAXVALUE)
--
-- Dropping old days
--   ALTER TABLE iot_data DROP PARTITION p20250410
--   removes that day at once, without a DELETE. A range partition starts where the previous
--   one ends, so after a drop the next partition also covers the dropped day: a reading that
--   arrives late for a dropped day makes the sink split that next partition again, which
--   copies its rows. Drop only days older than the latest reading you still accept.
--
-- Times
--   event_time is the wall-clock time of the reading in the configured time zone, kafka_ts
--   the Kafka message timestamp in UTC, ingested_at the server time of the insert. All have
--   millisecond precision.
--
-- This file is run as one multi-statement script and is safe to run again: it only creates
-- what is missing. It contains no DELIMITER commands.

CREATE TABLE IF NOT EXISTS iot_data (
    event_time      DATETIME(3)    NOT NULL COMMENT 'reading time, local wall time in the configured zone',
    pboxid          VARCHAR(64)    NOT NULL COMMENT 'device id',
    metric          DECIMAL(24,8)  NOT NULL,
    latitude        DECIMAL(11,8)  NOT NULL,
    longitude       DECIMAL(11,8)  NOT NULL,
    company         VARCHAR(128)   NULL,
    site            VARCHAR(128)   NULL,
    line            VARCHAR(128)   NULL,
    device_name     VARCHAR(128)   NULL,
    model           VARCHAR(128)   NULL,
    device_status   VARCHAR(32)    NULL,
    work_threshold  DECIMAL(24,8)  NULL,
    src_partition   INT            NOT NULL COMMENT 'Kafka partition of the reading',
    src_offset      BIGINT         NOT NULL COMMENT 'Kafka offset of the reading',
    kafka_ts        DATETIME(3)    NULL     COMMENT 'Kafka message timestamp, UTC',
    ingested_at     DATETIME(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (src_partition, src_offset, event_time),
    KEY idx_pbox_time (pboxid, event_time)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
  COMMENT='IoT readings, one partition per day (see schemas/mysql/iot_data.sql)'
PARTITION BY RANGE COLUMNS(event_time) (
    PARTITION pmax VALUES LESS THAN (MAXVALUE)
);
