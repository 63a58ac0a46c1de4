//! The file source operator.
//!
//! Files are spread over the cluster's workers by their place in the sorted list (file `i` to
//! worker `i % peers`, processes included: every process lists the same files). A worker reads
//! its files one after the other, at most `max_poll_records` lines per activation, under the
//! current epoch of wall-clock time (as the Kafka source does), and pauses while its sinks or
//! stashes hold too much. When its last file is read it drops its capability; the job's probe
//! then completes once every sink has acknowledged everything.
//!
//! A file that cannot be opened or read to its end (a truncated gzip) stops the worker's
//! reading: what was emitted before still flows to the sinks and is acknowledged, the error is
//! kept in the [`FileSummary`] and the job fails with it after the probe completed. There is
//! no commit: a re-run reads everything again and the sinks' keys on the source position make
//! that harmless.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use iotflow_kafka::{epoch_of, Backpressure, KafkaRecord, SourceHandle};
use iotflow_metrics::SourceMetrics;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use crate::{FileError, InputFile, LineReader};

/// The source "topic" of file input: the `topic` of its dead letters (`iotflow.source_topic`
/// header, key `file/{partition}/{offset}`); the file itself is named in the letter's reason.
pub const FILE_TOPIC: &str = "file";

/// How the file source behaves.
#[derive(Clone, Debug)]
pub struct FileSourceOptions {
    /// Epoch length in milliseconds (`job.epoch_ms`).
    pub epoch_ms: u64,
    /// Most lines emitted per activation (`kafka.max_poll_records`).
    pub max_poll_records: usize,
    /// Pause reading while the worker's sinks hold more rows than this.
    pub max_pending_rows: usize,
    /// Records held outside the sinks and the most of them before the source pauses.
    pub stashed: Option<(Backpressure, usize)>,
}

/// What the file sources of a process did: counted as they go, printed at the end.
#[derive(Debug, Default)]
pub struct FileSummary {
    /// Files read to their end.
    pub files: AtomicU64,
    /// Lines emitted (each became a reading or a dead letter).
    pub lines: AtomicU64,
    /// Lines that became dead letters (counted by the job).
    pub bad_lines: AtomicU64,
    /// Set when a stop request ended reading before the end of the input.
    pub interrupted: AtomicBool,
    error: Mutex<Option<String>>,
}

impl FileSummary {
    /// Keeps the first input error.
    pub fn fail(&self, e: &FileError) {
        self.error
            .lock()
            .expect("summary lock")
            .get_or_insert_with(|| e.to_string());
    }

    /// The first input error, if any.
    pub fn error(&self) -> Option<String> {
        self.error.lock().expect("summary lock").clone()
    }
}

/// The files of `files` that worker `index` of `peers` reads: every `peers`-th, from `index`.
pub fn assigned(files: &[InputFile], index: usize, peers: usize) -> Vec<InputFile> {
    files
        .iter()
        .enumerate()
        .filter(|(i, _)| i % peers.max(1) == index)
        .map(|(_, f)| f.clone())
        .collect()
}

/// Builds the file source for this worker: the records of its share of `files` (see the
/// module docs), with the file's partition, the line's byte offset, no timestamp and no key.
/// `lifecycle.stop` (SIGTERM) ends the reading early; it is noted in `summary`.
pub fn file_source<'scope>(
    scope: Scope<'scope, u64>,
    files: &[InputFile],
    options: FileSourceOptions,
    metrics: SourceMetrics,
    pressure: Backpressure,
    lifecycle: Arc<SourceHandle>,
    summary: Arc<FileSummary>,
) -> StreamVec<'scope, u64, KafkaRecord> {
    let index = scope.index();
    let mine = assigned(files, index, scope.peers());
    tracing::info!(
        worker = index,
        files = ?mine.iter().map(|f| (&f.name, f.partition)).collect::<Vec<_>>(),
        "file source assigned {} of {} files",
        mine.len(),
        files.len()
    );
    source::<_, CapacityContainerBuilder<Vec<KafkaRecord>>, _, _>(
        scope,
        "file-source",
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut cap = Some(cap);
            let mut queue: VecDeque<InputFile> = mine.into();
            // The file being read, its reader and its line count so far.
            let mut current: Option<(InputFile, LineReader, u64)> = None;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                let now_epoch = epoch_of(SystemTime::now(), options.epoch_ms);
                if now_epoch > *c.time() {
                    c.downgrade(&now_epoch);
                }
                if lifecycle.stop.load(Ordering::SeqCst) {
                    if current.is_some() || !queue.is_empty() {
                        summary.interrupted.store(true, Ordering::SeqCst);
                        tracing::warn!(
                            worker = index,
                            "stop requested: file source ends before the end of its input"
                        );
                    }
                    cap = None;
                    return;
                }
                let paused = pressure.get() > options.max_pending_rows
                    || options
                        .stashed
                        .as_ref()
                        .is_some_and(|(held, max)| held.get() > *max);
                let mut read = 0usize;
                if !paused {
                    let mut session = output.session(&*c);
                    while read < options.max_poll_records {
                        if current.is_none() {
                            let Some(f) = queue.pop_front() else { break };
                            match LineReader::open(&f) {
                                Ok(r) => current = Some((f, r, 0)),
                                Err(e) => {
                                    tracing::error!(worker = index, "{e}");
                                    summary.fail(&e);
                                    queue.clear();
                                    break;
                                }
                            }
                        }
                        let Some((f, reader, lines)) = current.as_mut() else {
                            break;
                        };
                        match reader.next_line() {
                            Ok(Some((offset, line))) => {
                                read += 1;
                                *lines += 1;
                                session.give(KafkaRecord {
                                    partition: f.partition,
                                    offset,
                                    ts_ms: None,
                                    key: None,
                                    payload: Some(line),
                                });
                            }
                            Ok(None) => {
                                tracing::info!(worker = index, file = %f.name, partition = f.partition, lines = *lines, "input file read");
                                summary.files.fetch_add(1, Ordering::Relaxed);
                                current = None;
                            }
                            Err(e) => {
                                tracing::error!(
                                    worker = index,
                                    "{e}; the lines before it are kept"
                                );
                                summary.fail(&e);
                                current = None;
                                queue.clear();
                                break;
                            }
                        }
                    }
                }
                if read > 0 {
                    metrics.messages_received.inc_by(read as u64);
                    summary.lines.fetch_add(read as u64, Ordering::Relaxed);
                }
                if current.is_none() && queue.is_empty() {
                    tracing::info!(worker = index, "file source finished");
                    cap = None;
                    return;
                }
                if read >= options.max_poll_records {
                    activator.activate();
                } else {
                    // Paused: look again soon (sinks drain, epochs close).
                    activator.activate_after(Duration::from_millis(20));
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use timely::dataflow::operators::{Capture, Inspect};

    use super::*;

    fn write_files(dir: &std::path::Path, n: usize, lines: usize) -> Vec<InputFile> {
        for i in 0..n {
            let text: String = (0..lines).map(|l| format!("f{i} l{l}\n")).collect();
            let bytes = if i % 2 == 1 {
                crate::reader::tests::gzip(text.as_bytes())
            } else {
                text.into_bytes()
            };
            std::fs::write(dir.join(format!("{i:02}.jsonl")), bytes).unwrap();
        }
        crate::discover(&[dir.to_path_buf()]).unwrap()
    }

    fn run(files: Vec<InputFile>, workers: usize) -> (Vec<KafkaRecord>, Arc<FileSummary>) {
        let summary = Arc::new(FileSummary::default());
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let s = summary.clone();
        let metrics = Arc::new(iotflow_metrics::Metrics::new("test", "t"));
        timely::execute(timely::Config::process(workers), move |worker| {
            let tx = tx.lock().unwrap().clone();
            let (files, s, m) = (files.clone(), s.clone(), metrics.clone());
            worker.dataflow::<u64, _, _>(|scope| {
                let options = FileSourceOptions {
                    epoch_ms: 10,
                    max_poll_records: 7,
                    max_pending_rows: usize::MAX,
                    stashed: None,
                };
                file_source(
                    scope,
                    &files,
                    options,
                    m.source("file-source", scope.index()),
                    Default::default(),
                    SourceHandle::new(0),
                    s,
                )
                .inspect(|_| {})
                .capture_into(tx);
            });
        })
        .unwrap()
        .join()
        .into_iter()
        .for_each(|r| r.unwrap());
        let mut records: Vec<KafkaRecord> = rx
            .try_iter()
            .flat_map(|e| match e {
                timely::dataflow::operators::capture::Event::Messages(_, d) => d,
                _ => vec![],
            })
            .collect();
        records.sort_by_key(|r| (r.partition, r.offset));
        (records, summary)
    }

    #[test]
    fn every_line_of_every_file_comes_out_once_with_its_position() {
        let dir = crate::tests::temp_dir("source");
        let files = write_files(&dir, 5, 30);
        for workers in [1, 3] {
            let (records, summary) = run(files.clone(), workers);
            assert_eq!(records.len(), 150, "{workers} workers");
            assert_eq!(summary.files.load(Ordering::SeqCst), 5);
            assert_eq!(summary.lines.load(Ordering::SeqCst), 150);
            assert!(summary.error().is_none());
            for f in &files {
                let mine: Vec<_> = records
                    .iter()
                    .filter(|r| r.partition == f.partition)
                    .collect();
                assert_eq!(mine.len(), 30, "{}", f.name);
                let i: usize = f.name[..2].parse().unwrap();
                // Lines `f{i} l{l}\n`: offsets are the running sum of line lengths.
                let mut offset = 0;
                for (l, r) in mine.iter().enumerate() {
                    let text = format!("f{i} l{l}");
                    assert_eq!(
                        (r.offset, r.payload.as_deref()),
                        (offset, Some(text.as_bytes()))
                    );
                    assert_eq!((r.ts_ms, r.key.as_ref()), (None, None));
                    offset += text.len() as i64 + 1;
                }
            }
        }
    }

    #[test]
    fn an_unreadable_file_is_reported_and_the_rest_of_the_worker_stops() {
        let dir = crate::tests::temp_dir("unreadable");
        let mut files = write_files(&dir, 2, 10);
        std::fs::remove_file(&files[1].path).unwrap();
        files[1].path = dir.join("gone.jsonl");
        let (records, summary) = run(files, 1);
        assert_eq!(records.len(), 10, "the first file is kept");
        let error = summary.error().expect("an error");
        assert!(error.contains("gone.jsonl"), "{error}");
    }

    #[test]
    fn files_are_spread_over_workers() {
        let files: Vec<InputFile> = (0..7)
            .map(|i| InputFile {
                path: format!("{i}").into(),
                name: format!("{i}"),
                partition: -1 - i,
            })
            .collect();
        let mut all: Vec<i32> = (0..3)
            .flat_map(|w| assigned(&files, w, 3))
            .map(|f| f.partition)
            .collect();
        assert_eq!(assigned(&files, 1, 3).len(), 2);
        all.sort();
        assert_eq!(all, (-7..=-1).collect::<Vec<_>>());
    }
}
