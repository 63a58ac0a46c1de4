//! Day partitions of the `iot_data` table, created on demand before a batch is written.
//!
//! # The rule
//!
//! The table is `PARTITION BY RANGE COLUMNS(event_time)`. Before a batch is written, every day the
//! batch touches must have its own partition `pYYYYMMDD` covering exactly `[day, day + 1)`, so that
//! dropping old data is `ALTER TABLE iot_data DROP PARTITION p20250410` and queries for one day
//! read one partition. Rows never sit in `pmax` or in any other partition for a day that has
//! (or should have) its own.
//!
//! # Any layout a human made
//!
//! The table may start with the single `pmax` partition of `schemas/mysql/iot_data.sql`, or with a
//! layout written by hand, e.g.
//!
//! ```text
//! p20250410 VALUES LESS THAN ('2025-04-11')    -- actually covers everything before 04-11
//! p20250411 VALUES LESS THAN ('2025-04-12')
//! p20250415 VALUES LESS THAN ('2025-04-16')    -- covers 04-12 to 04-15: a multi-day gap
//! pmax      VALUES LESS THAN (MAXVALUE)
//! ```
//!
//! Range partitions are defined by their upper bounds only: each one starts where the previous one
//! ends, and the first one has no lower bound. [`plan`] finds the partition(s) whose range
//! contains the day and splits them with `REORGANIZE PARTITION` into up to three pieces: the part
//! before the day, the day itself, and the part after it. Pieces are named
//!
//! * `pYYYYMMDD` when they cover exactly one day,
//! * `pmax` when they end at `MAXVALUE`,
//! * `pmin` when they have no lower bound (the first partition),
//! * `pgapYYYYMMDD` (named for their first day) for any other multi-day range,
//!
//! with a `_2`, `_3`, ... suffix when the name is already used by a partition that stays.
//!
//! The pieces around the day normally hold no rows, because every row the sink writes goes into a
//! day partition; reorganizing them is therefore cheap. When a human-made multi-day partition does
//! hold rows, `REORGANIZE PARTITION` moves each row into the piece that covers it (the integration
//! tests check this), at the cost of copying that partition once.
//!
//! Bounds that are not midnight (`'2025-04-13 12:00:00'`) are handled too: a day that straddles two
//! partitions is carved out of both in one statement. A table without a `MAXVALUE` partition is
//! extended: a day past the last bound becomes a new last partition.
//!
//! # Concurrency
//!
//! Every worker of every process runs its own [`PartitionManager`]. Changes are serialized with a
//! server-side named lock, `GET_LOCK('iotflow:partitions:<db>.<table>', 30)`, held only while the
//! layout is re-read and the missing partitions are created; days already known to have their
//! partition cost nothing, and days another worker just created are found by a lock-free read.
//! Humans do not take that lock: if a `REORGANIZE` fails because the layout changed under it, the
//! manager re-reads the layout and tries again a few times.
//!
//! `ALTER TABLE` waits for a metadata lock on the table and, while it waits, blocks every insert
//! queued behind it. The manager therefore lowers the session's `lock_wait_timeout` around its
//! `ALTER`s (30 s by default), so a long-running query on the table makes the change fail with a
//! transient error instead of stalling the pipeline indefinitely.
//!
//! DDL commits any open transaction: call [`PartitionManager::ensure_days`] outside a transaction.
//!
//! # Files
//!
//! * [`planner`]: the plan, pure: layouts, bounds, the `ALTER TABLE` for a day (unit-tested
//!   against hand-made layouts);
//! * [`schema`]: reading a table's layout from `information_schema.PARTITIONS`;
//! * [`manager`]: [`PartitionManager`], which runs the plan under a server-side named lock;
//! * [`errors`]: [`PartitionError`] and which of its cases are transient.

pub mod errors;
pub mod manager;
pub mod planner;
pub mod schema;

pub use errors::PartitionError;
pub use manager::{lock_name, PartitionManager};
pub use planner::{
    apply, exact_days, plan, plan_all, validate_layout, PartitionBound, Reorganize, UpperBound,
    FIRST_PARTITIONABLE_DAY, LAST_PARTITIONABLE_DAY,
};
pub use schema::read_partitions;
