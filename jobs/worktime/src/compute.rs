//! The analysis of one day as a timely dataflow: every worker reads its share of the devices
//! and runs [`iotflow_worktime::worktime`] on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::bail;
use chrono::NaiveDate;
use differential_dataflow::input::Input;
use iotflow_config::Config;
use iotflow_worktime::{worktime, DayResult, Point, Rules};
use mysql_async::Pool;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};

use crate::read::{read_share, read_share_clickhouse, read_thresholds};

/// One device's result row.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ResultRow {
    pub(crate) pboxid: String,
    pub(crate) result: DayResult,
    pub(crate) threshold: i128,
}

/// Computes one day on `workers` timely workers; returns the results and the rows read.
pub(crate) fn compute(
    config: &Config,
    url: &str,
    day: NaiveDate,
    rules: Rules,
    workers: usize,
) -> anyhow::Result<(Vec<ResultRow>, u64)> {
    let config = config.clone();
    let results: Arc<Mutex<Vec<ResultRow>>> = Arc::default();
    let read: Arc<Mutex<u64>> = Arc::default();
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let (sink, count, failed) = (results.clone(), read.clone(), failure.clone());
    let url = url.to_string();
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime per worker");
        let loaded = runtime.block_on(async {
            let pool = Pool::new(url.as_str());
            let share = if config.worktime.source == "clickhouse" {
                read_share_clickhouse(&config, day, index, peers).await
            } else {
                read_share(&pool, day, index, peers).await
            };
            let thresholds = read_thresholds(&pool).await;
            pool.disconnect().await.ok();
            Ok::<_, anyhow::Error>((share?, thresholds?))
        });
        let (share, thresholds) = match loaded {
            Ok(x) => x,
            Err(e) => {
                failed.lock().expect("lock").get_or_insert(format!("{e:#}"));
                (Vec::new(), Vec::new())
            }
        };
        *count.lock().expect("lock") += share.len() as u64;
        tracing::info!(day = %day, worker = index, readings = share.len(), "read; computing");
        // Every worker knows every threshold (a small table), to report the one used.
        let used: HashMap<String, i128> = thresholds.iter().cloned().collect();
        let sink = sink.clone();
        let probe = ProbeHandle::new();
        let (mut rin, mut tin) = worker.dataflow::<u64, _, _>(|scope| {
            let (rin, readings) = scope.new_collection::<(String, Point), isize>();
            let (tin, thresholds) = scope.new_collection::<(String, i128), isize>();
            worktime(readings, thresholds, rules)
                .inner
                .inspect(move |(((pboxid, _day), result), _time, diff)| {
                    // One round of input: results only appear, never change.
                    if *diff > 0 {
                        sink.lock().expect("lock").push(ResultRow {
                            pboxid: pboxid.clone(),
                            result: *result,
                            threshold: used.get(pboxid).copied().unwrap_or(rules.default_threshold),
                        });
                    }
                })
                .probe_with(&probe);
            (rin, tin)
        });
        for r in share {
            rin.insert(r);
        }
        if index == 0 {
            for t in thresholds {
                tin.insert(t);
            }
        }
        rin.close();
        tin.close();
        while !probe.done() {
            worker.step();
        }
    })
    .map_err(|e| anyhow::anyhow!("starting timely workers: {e}"))?;
    if let Some(e) = failure.lock().expect("lock").take() {
        bail!("{e}");
    }
    let mut rows = std::mem::take(&mut *results.lock().expect("lock"));
    rows.sort_by(|a, b| a.pboxid.cmp(&b.pboxid));
    let n = *read.lock().expect("lock");
    Ok((rows, n))
}
