-- Alarm episodes: one row per (rule, device, first reading), written by the streaming job's
-- alarm checkpoints (docs/alarms.md). Idempotent: a replayed episode overwrites its own row.
-- Times are event times as the stores keep them (local wall time of the reading, no zone).
-- `device_alarms` is replaced by `alarms.table`.
CREATE TABLE IF NOT EXISTS `device_alarms` (
    rule_id         VARCHAR(128)   NOT NULL COMMENT 'the rule''s id',
    pboxid          VARCHAR(64)    NOT NULL,
    first_at        DATETIME(3)    NOT NULL COMMENT 'first reading of the episode (offline: the last reading before the silence)',
    severity        VARCHAR(16)    NOT NULL COMMENT 'info, warning or critical',
    raised_at       DATETIME(3)    NOT NULL COMMENT 'the reading that raised it (offline: last reading + silence)',
    raised_value    DECIMAL(24, 8) NOT NULL COMMENT 'metric of that reading',
    last_at         DATETIME(3)    NOT NULL COMMENT 'latest reading of the episode before its last event',
    cleared_at      DATETIME(3)    NULL     COMMENT 'the reading that cleared it; NULL while active',
    cleared_value   DECIMAL(24, 8) NULL,
    PRIMARY KEY (rule_id, pboxid, first_at),
    KEY active (cleared_at, raised_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
