-- Daily work-time results per device (iotflow worktime; rules in docs/worktime.md).
-- Re-running a day replaces that day's rows in one transaction. `device_work_time_runs` records
-- each day's last run, so a scheduled job catches up missed days after downtime.
-- Times are the device's local wall time, like iot_data.event_time.

CREATE TABLE IF NOT EXISTS device_work_time (
    day               DATE           NOT NULL,
    pboxid            VARCHAR(64)    NOT NULL,
    segments          INT UNSIGNED   NOT NULL COMMENT 'working segments (runs of metric > threshold)',
    working_seconds   DOUBLE         NOT NULL,
    first_reading     DATETIME(3)    NOT NULL,
    last_reading      DATETIME(3)    NOT NULL,
    observed_seconds  DOUBLE         NOT NULL COMMENT 'last_reading - first_reading',
    utilisation       DOUBLE         NOT NULL COMMENT 'working / observed, 0 when observed is 0',
    day_share         DOUBLE         NOT NULL COMMENT 'working / 86400',
    readings          INT UNSIGNED   NOT NULL,
    threshold         DECIMAL(24, 8) NOT NULL COMMENT 'threshold used',
    computed_at       DATETIME(3)    NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (day, pboxid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS device_work_time_runs (
    day          DATE             NOT NULL,
    status       ENUM('running', 'succeeded', 'failed') NOT NULL,
    started_at   DATETIME(3)      NOT NULL,
    finished_at  DATETIME(3)      NULL,
    rows_read    BIGINT UNSIGNED  NOT NULL DEFAULT 0,
    devices      INT UNSIGNED     NOT NULL DEFAULT 0,
    message      VARCHAR(1024)    NULL,
    PRIMARY KEY (day)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
