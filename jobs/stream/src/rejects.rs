//! Where the job's dead letters are noted: the topic for rows a store refused, and the web UI's
//! list of recent reasons.

use std::rc::Rc;
use std::sync::Arc;

use iotflow_kafka::DeadLetterProducer;
use iotflow_metrics::{Metrics, RecentDeadLetters};
use iotflow_model::{DeadLetter, SourceRef};
use iotflow_sink::{Rejected, Rejects, RejectsFor};
use timely::dataflow::operators::Inspect;
use timely::dataflow::StreamVec;

/// Every sink's refused rows, for worker `worker`: each becomes a dead letter on the
/// dead-letter topic (the row as the sink would have stored it as payload, the server's reason
/// in the headers, reason code `{sink}_rejected`), counted per sink operator, shown in the web
/// UI; the write waits for the broker's acknowledgement.
pub fn to_dead_letters(
    producer: DeadLetterProducer,
    topic: String,
    metrics: Arc<Metrics>,
    worker: usize,
) -> RejectsFor {
    Rc::new(move |sink, store, operator| {
        sink_rejects(
            sink,
            store,
            producer.counting(metrics.dlq(operator, worker)),
            topic.clone(),
            metrics.recent_dead_letters(),
        )
    })
}

fn sink_rejects(
    sink: &'static str,
    store: &'static str,
    dead_letters: DeadLetterProducer,
    topic: String,
    recent: RecentDeadLetters,
) -> Rejects {
    let code = format!("{sink}_rejected");
    Arc::new(move |r: Rejected| {
        let dead_letters = dead_letters.clone();
        recent.note(
            &code,
            &r.reason,
            &format!("{topic}/{}/{}", r.src_partition, r.src_offset),
        );
        let letter = DeadLetter {
            payload: r.document.into_bytes(),
            truncated: false,
            reason: format!("{store} refused the row for {}: {}", r.target, r.reason),
            reason_code: code.clone(),
            topic: topic.clone(),
            source: SourceRef {
                partition: r.src_partition,
                offset: r.src_offset,
            },
            kafka_ts_ms: r.kafka_ts_ms,
        };
        Box::pin(async move { dead_letters.send(&letter).await })
    })
}

/// The parser's dead letters, noted in the web UI's list of recent reasons on their way.
pub fn noted<'scope>(
    letters: StreamVec<'scope, u64, DeadLetter>,
    recent: RecentDeadLetters,
) -> StreamVec<'scope, u64, DeadLetter> {
    letters.inspect(move |l| {
        recent.note(
            &l.reason_code,
            &l.reason,
            &format!("{}/{}/{}", l.topic, l.source.partition, l.source.offset),
        )
    })
}
