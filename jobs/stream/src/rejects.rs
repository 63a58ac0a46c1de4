//! Where the job's dead letters are noted: the topic for rows a store refused, and the web UI's
//! list of recent reasons.

use std::rc::Rc;
use std::sync::Arc;

use iotflow_file::{FileSummary, InputFile};
use iotflow_kafka::DeadLetterProducer;
use iotflow_metrics::{Metrics, RecentDeadLetters};
use iotflow_model::{DeadLetter, SourceRef};
use iotflow_sink::{Rejected, Rejects, RejectsFor};
use timely::dataflow::operators::vec::Map;
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

/// The parser's dead letters of file input, each reason prefixed with the file and the line's
/// byte offset (the letter's partition is the file's, see `iotflow_file::partition_of`), and
/// counted as bad lines in `summary`.
pub fn from_files<'scope>(
    letters: StreamVec<'scope, u64, DeadLetter>,
    files: Arc<Vec<InputFile>>,
    summary: Arc<FileSummary>,
) -> StreamVec<'scope, u64, DeadLetter> {
    let names: std::collections::HashMap<i32, String> = files
        .iter()
        .map(|f| (f.partition, f.name.clone()))
        .collect();
    letters.map(move |mut l| {
        summary
            .bad_lines
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = names.get(&l.source.partition).map_or("?", String::as_str);
        l.reason = format!("file {name} offset {}: {}", l.source.offset, l.reason);
        l
    })
}
