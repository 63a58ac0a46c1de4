//! Building the replicated device dimension.

use std::collections::HashMap;
use std::sync::Arc;

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use iotflow_model::{DeviceChange, DeviceInfo};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::StreamVec;

/// One differential update of the dimension: `((pboxid, record), time, diff)`.
pub type DeviceUpdate = ((String, Arc<DeviceInfo>), u64, i64);

/// The trace type of the replicated dimension. Records are shared (`Arc`): the workers of a
/// process hold one copy of each, and a reading's enrichment is a reference count.
pub type DimensionTrace = TraceAgent<ValSpine<String, Arc<DeviceInfo>, u64, i64>>;

/// Turns upsert-style device changes into differential updates (retract the old record,
/// insert the new one).
///
/// Each device id lives in one Kafka partition, read by one worker, so that worker's map of
/// current records is the whole truth for the ids it sees. The map lives only in this operator;
/// every worker's arrangement is built from the updates it emits.
pub fn device_updates<'scope>(
    changes: StreamVec<'scope, u64, DeviceChange>,
) -> StreamVec<'scope, u64, DeviceUpdate> {
    let mut current: HashMap<String, Arc<DeviceInfo>> = HashMap::new();
    // `Map::flat_map` has no access to times; a unary operator gives both.
    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::operators::generic::Operator;
    changes.unary::<CapacityContainerBuilder<Vec<DeviceUpdate>>, _, _, _>(
        Pipeline,
        "device-upsert",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(t) = cap.least().copied() else {
                        return;
                    };
                    let mut session = output.session(&cap);
                    for change in data.drain(..) {
                        match change {
                            DeviceChange::Upsert(info) => {
                                if current.get(&info.pboxid).map(|d| &**d) == Some(&info) {
                                    continue;
                                }
                                let info = Arc::new(info);
                                if let Some(old) = current.insert(info.pboxid.clone(), info.clone())
                                {
                                    session.give(((old.pboxid.clone(), old), t, -1));
                                }
                                session.give(((info.pboxid.clone(), info), t, 1));
                            }
                            DeviceChange::Delete(id) => {
                                if let Some(old) = current.remove(&id) {
                                    session.give(((id, old), t, -1));
                                }
                            }
                        }
                    }
                });
            }
        },
    )
}

/// Broadcasts dimension updates to every worker and arranges them there, without re-sharding:
/// each worker holds the whole dimension.
pub fn replicate_dimension<'scope>(
    updates: StreamVec<'scope, u64, DeviceUpdate>,
) -> Arranged<'scope, DimensionTrace> {
    let broadcast = updates.broadcast().map(|u| u);
    arrange_core::<
        _,
        _,
        ValBatcher<String, Arc<DeviceInfo>, u64, i64>,
        ValSpine<String, Arc<DeviceInfo>, u64, i64>,
    >(broadcast, Pipeline, "device-dimension", ValBatcher::new)
}
