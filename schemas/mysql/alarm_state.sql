-- Checkpointed alarm state of the streaming job (docs/alarms.md), per consumer group: one row
-- per device (kind 'device', id = pboxid) and one per worker clock (kind 'clock',
-- id = 'worker/peers'). Written in the same transaction as the `device_alarms` rows the state
-- has produced; read back at start. `alarm_state` is replaced by `alarms.state_table`.
CREATE TABLE IF NOT EXISTS `alarm_state` (
    grp         VARCHAR(255) NOT NULL COMMENT 'kafka.group_id of the job',
    kind        VARCHAR(8)   NOT NULL COMMENT 'device or clock',
    id          VARCHAR(64)  NOT NULL,
    state       MEDIUMTEXT   NOT NULL COMMENT 'JSON, decimals as exact text',
    updated_at  TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (grp, kind, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
