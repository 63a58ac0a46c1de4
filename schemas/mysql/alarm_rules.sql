-- Alarm rules kept in MySQL, changed live, and their change capture.
--
-- `alarm_rules` is the table operators edit: one row per rule, the same fields as an
-- `[[alarms.rules]]` entry of the configuration (docs/alarms.md). Three triggers record every
-- insert, update and delete in `alarm_rules_changes` (the outbox), in the transaction of the
-- change, with the event time from which the change applies: the row's `effective_from`, or
-- the time of the change when that is NULL (the usual case). `iotflow publish-devices`, when
-- `alarms.rules_topic` is set, publishes the whole enabled rule set to that topic whenever the
-- outbox has rows, waits for the broker, then deletes the rows it covered; the alarm job
-- applies each set from its event time on. Changes published together take effect together,
-- at the latest of their times.
--
-- Runnable as is with the mariadb/mysql client; iotflow splits it at the DELIMITER markers.
-- The publisher creates it when `publisher.create_schema` is on (the default). TRUNCATE is
-- not captured (use DELETE).

DELIMITER $$

CREATE TABLE IF NOT EXISTS alarm_rules (
    id                VARCHAR(64)     NOT NULL COMMENT 'the rule id of every event and episode',
    `when`            ENUM('above', 'below', 'outside', 'offline', 'in_area', 'out_of_area') NOT NULL,
    value             DECIMAL(24, 8)  NULL     COMMENT 'bound of above / below',
    low               DECIMAL(24, 8)  NULL     COMMENT 'outside: lower edge of the normal band',
    high              DECIMAL(24, 8)  NULL     COMMENT 'outside: upper edge of the normal band',
    after_secs        INT UNSIGNED    NULL     COMMENT 'offline: seconds of event-time silence',
    area              MEDIUMTEXT      NULL     COMMENT 'in_area / out_of_area: GeoJSON polygon coordinates [[[lon, lat], ...], ...holes]',
    for_ms            BIGINT UNSIGNED NOT NULL DEFAULT 0 COMMENT 'the breach must hold this long',
    hysteresis        DECIMAL(24, 8)  NOT NULL DEFAULT 0,
    severity          ENUM('info', 'warning', 'critical') NOT NULL DEFAULT 'warning',
    device            VARCHAR(64)     NULL     COMMENT 'scope: only this device',
    model             VARCHAR(64)     NULL     COMMENT 'scope: only devices of this model',
    site              VARCHAR(128)    NULL     COMMENT 'scope: only devices at this site',
    device_threshold  BOOLEAN         NOT NULL DEFAULT FALSE COMMENT 'use device_info.work_threshold',
    enabled           BOOLEAN         NOT NULL DEFAULT TRUE,
    effective_from    DATETIME(3)     NULL     COMMENT 'event time this version applies from; NULL: the time of the change',
    updated_at        DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
$$

-- Tables made before area rules existed get the column and the two `when` values.
ALTER TABLE alarm_rules ADD COLUMN IF NOT EXISTS
    area MEDIUMTEXT NULL COMMENT 'in_area / out_of_area: GeoJSON polygon coordinates [[[lon, lat], ...], ...holes]'
    AFTER after_secs
$$

ALTER TABLE alarm_rules MODIFY `when`
    ENUM('above', 'below', 'outside', 'offline', 'in_area', 'out_of_area') NOT NULL
$$

CREATE TABLE IF NOT EXISTS alarm_rules_changes (
    id            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    rule_id       VARCHAR(64)     NOT NULL,
    op            ENUM('insert', 'update', 'delete') NOT NULL,
    effective_at  DATETIME(3)     NOT NULL,
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
  COMMENT 'outbox of alarm_rules changes; written by triggers, drained by iotflow publish-devices'
$$

CREATE TRIGGER IF NOT EXISTS alarm_rules_after_insert AFTER INSERT ON alarm_rules
FOR EACH ROW INSERT INTO alarm_rules_changes (rule_id, op, effective_at)
    VALUES (NEW.id, 'insert', COALESCE(NEW.effective_from, NOW(3)))
$$

CREATE TRIGGER IF NOT EXISTS alarm_rules_after_update AFTER UPDATE ON alarm_rules
FOR EACH ROW INSERT INTO alarm_rules_changes (rule_id, op, effective_at)
    VALUES (NEW.id, 'update', COALESCE(NEW.effective_from, NOW(3)))
$$

CREATE TRIGGER IF NOT EXISTS alarm_rules_after_delete AFTER DELETE ON alarm_rules
FOR EACH ROW INSERT INTO alarm_rules_changes (rule_id, op, effective_at)
    VALUES (OLD.id, 'delete', NOW(3))
$$

DELIMITER ;
