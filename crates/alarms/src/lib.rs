//! Device alarms in event time (`docs/alarms.md`).
//!
//! A [`Rule`] says when a device is in alarm: its metric above or below a bound, or outside a
//! band, for at least a duration of event time, cleared only past a hysteresis margin; or no
//! reading for a time (offline). The [`Engine`] keeps one small state per (rule, device) and
//! turns each device's readings, in event-time order, into raised and cleared [`Event`]s. The
//! [`Reorder`] buffer puts readings that arrive out of order into that order, within a lateness
//! bound, and reports the ones that come later than the bound instead of applying them.
//!
//! Everything here is a function of the data: the same readings, in any arrival order within
//! the bound, give the same events ([`reference`] is the direct definition the tests compare
//! against).

mod engine;
mod order;
pub mod reference;
mod rule;
pub mod stored;

pub use engine::{DeviceSnapshot, Engine, Event, EventKind, Sample, State};
pub use order::{Pushed, Reorder};
pub use rule::{Area, Condition, Rule, RuleError, Scope, Severity};
pub use stored::{StoredClock, StoredDevice, StoredError, StoredSample, StoredState};
