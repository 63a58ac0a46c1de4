//! Enrichment: the device dimension as a differential arrangement replicated on every worker,
//! and the lookup that joins each reading with its device's record as of the reading's time.
//!
//! Why replicated: readings are never reshuffled for the join (they stay on the worker that
//! read them, next to their Kafka partition and their sink), so every worker needs every device.
//! Device changes are few; readings are many.
//!
//! Why asymmetric: a change to a device must affect readings processed after it, not rows
//! already stored. The lookup therefore reads the arrangement at the reading's timestamp once
//! the dimension is complete through it, and never revisits a reading (the pattern of dogs3's
//! `half_join`, without its exchange of the fact stream).

mod dimension;
mod lookup;

pub use dimension::{device_updates, replicate_dimension, DeviceUpdate, DimensionTrace};
pub use lookup::EnrichWith;
