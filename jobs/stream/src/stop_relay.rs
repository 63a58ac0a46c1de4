//! A stop request reaches the whole cluster.
//!
//! A SIGTERM stops one process (Kubernetes deletes one pod, an operator stops one host), but a
//! timely cluster drains together: the dimension and the progress of every worker are shared,
//! so a process whose readers drained still waits for the others. Without this relay it waits
//! until it is killed, and the others then stop on the lost peer. With it, the request is
//! broadcast to every worker, every process drains (commits what its sinks stored) and exits 0,
//! and the orchestrator starts the cluster again.
//!
//! Only a stop that was asked for (a signal) is relayed: a reader that finishes because it has
//! no partitions, or because its input went idle, must not stop the others.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iotflow_kafka::SourceHandle;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Inspect;
use timely::dataflow::ProbeHandle;
use timely::worker::Worker;

/// Installs the relay on `worker`: a dataflow of its own that ends once `job` (the main
/// graph's probe) is done or the request has been passed on.
pub fn install(worker: &mut Worker, lifecycle: Arc<SourceHandle>, job: ProbeHandle<u64>) {
    let index = worker.index();
    let on_receipt = lifecycle.clone();
    worker.dataflow::<u64, _, _>(move |scope| {
        source::<_, CapacityContainerBuilder<Vec<usize>>, _, _>(
            scope,
            "stop-relay",
            move |cap, info| {
                let activator = scope.activator_for(info.address.clone());
                let mut cap = Some(cap);
                move |output| {
                    let Some(c) = cap.as_ref() else { return };
                    if lifecycle.requested.load(Ordering::SeqCst) {
                        output.session(c).give(index);
                        cap = None;
                    } else if job.done() {
                        cap = None;
                    } else {
                        activator.activate_after(Duration::from_millis(100));
                    }
                }
            },
        )
        .broadcast()
        .inspect(move |from| {
            if !on_receipt.stop.swap(true, Ordering::SeqCst) {
                tracing::info!(
                    from_worker = from,
                    "stop requested elsewhere in the cluster: draining"
                );
            }
        });
    });
}
