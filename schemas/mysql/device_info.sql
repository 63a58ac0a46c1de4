-- Device business information (the enrichment dimension) and its change capture.
--
-- `device_info` is the table operators edit. Three triggers record every insert, update and
-- delete in `device_info_changes` (the outbox), in the same transaction as the change: a
-- committed change always has its outbox row, a rolled-back one never does. `iotflow
-- publish-devices` publishes the device's current record (or a tombstone when it no longer
-- exists) to `iot-broadcast` for each outbox row, in outbox order, and deletes the rows the
-- broker acknowledged. See docs/devices.md for why triggers and not the binlog.
--
-- Runnable as is with the mariadb/mysql client (`mariadb DB < device_info.sql`); iotflow splits
-- it at the DELIMITER markers itself. The publisher creates it when `publisher.create_schema`
-- is on (the default). Changes made without firing triggers are not captured: TRUNCATE (use
-- DELETE), foreign-key cascades, and edits while the triggers are dropped.

DELIMITER $$

CREATE TABLE IF NOT EXISTS device_info (
    pboxid          VARCHAR(64)     NOT NULL COMMENT 'device id, the join key of readings',
    company         VARCHAR(128)    NULL,
    site            VARCHAR(128)    NULL     COMMENT 'plant the device is installed at',
    line            VARCHAR(64)     NULL     COMMENT 'production line within the site',
    device_name     VARCHAR(128)    NULL,
    model           VARCHAR(64)     NULL,
    status          VARCHAR(32)     NULL     COMMENT 'active, maintenance, retired, ...',
    work_threshold  DECIMAL(24, 8)  NULL     COMMENT 'metric above this counts as working (default 50)',
    updated_at      DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (pboxid)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
$$

CREATE TABLE IF NOT EXISTS device_info_changes (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    pboxid      VARCHAR(64)     NOT NULL,
    op          ENUM('insert', 'update', 'delete') NOT NULL,
    changed_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin
  COMMENT 'outbox of device_info changes; written by triggers, drained by iotflow publish-devices'
$$

CREATE TRIGGER IF NOT EXISTS device_info_after_insert AFTER INSERT ON device_info
FOR EACH ROW INSERT INTO device_info_changes (pboxid, op) VALUES (NEW.pboxid, 'insert')
$$

-- A change of the id itself is a delete of the old id and an insert of the new one.
CREATE TRIGGER IF NOT EXISTS device_info_after_update AFTER UPDATE ON device_info
FOR EACH ROW BEGIN
    IF NEW.pboxid <> OLD.pboxid THEN
        INSERT INTO device_info_changes (pboxid, op) VALUES (OLD.pboxid, 'delete');
    END IF;
    INSERT INTO device_info_changes (pboxid, op) VALUES (NEW.pboxid, 'update');
END
$$

CREATE TRIGGER IF NOT EXISTS device_info_after_delete AFTER DELETE ON device_info
FOR EACH ROW INSERT INTO device_info_changes (pboxid, op) VALUES (OLD.pboxid, 'delete')
$$

DELIMITER ;
