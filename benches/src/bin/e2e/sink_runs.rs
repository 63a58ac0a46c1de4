//! (6b) and (7): the job over the backlog with only the ClickHouse sink, or only the
//! Elasticsearch sink writing to the in-process stand-in, started through a wrapper script that
//! sets that sink's configuration.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use iotflow_benches::job::{BATCH_WRITE, E2E_LATENCY, ROWS_WRITTEN};
use iotflow_benches::prom;
use iotflow_benches::report::BacklogRun;
use iotflow_es_stand_in::StandIn;

use crate::{Bench, Topics, STAND_IN_THREAD};

impl Bench {
    /// (6b) The job over the whole backlog with only the ClickHouse sink, into a fresh
    /// database; `SELECT count() … FINAL` must then find every reading.
    pub(crate) fn clickhouse_run(&mut self, topics: &Topics, name: &str) -> Result<BacklogRun> {
        let db = self.clickhouse_database("ch_job")?;
        let wrapper = self.wrapper(
            "clickhouse",
            &[
                ("IOTFLOW__MYSQL__ENABLED", "false"),
                ("IOTFLOW__CLICKHOUSE__ENABLED", "true"),
                ("IOTFLOW__CLICKHOUSE__URL", &self.args.clickhouse_url),
                ("IOTFLOW__CLICKHOUSE__DATABASE", &db),
                ("IOTFLOW__ELASTICSEARCH__ENABLED", "false"),
            ],
        )?;
        let (run, log) = self.sink_backlog_run(topics, &format!("backlog-{name}"), wrapper)?;
        let stored = self.clickhouse_count(&db)?;
        ensure!(
            stored == self.args.readings,
            "the job stored {stored} rows in ClickHouse `{db}`.iot_data (FINAL) for {} readings (see {})",
            self.args.readings,
            log.display()
        );
        Ok(run)
    }

    /// (7) The job over the whole backlog with only the Elasticsearch sink, into the stand-in,
    /// emptied first; the stand-in must then hold one document per reading. Also returns the
    /// CPU time of the stand-in's thread over the run, divided by the time from the first row
    /// written to the last: near 1 (or above, its work on the first batch comes before the
    /// first row), the stand-in and not the job set the pace.
    pub(crate) fn stand_in_run(
        &mut self,
        topics: &Topics,
        name: &str,
    ) -> Result<(BacklogRun, Option<f64>)> {
        let stand_in = self.stand_in.get_or_insert_with(StandIn::spawn);
        {
            // Empty, as a fresh cluster: the job installs its template again at start.
            let mut state = stand_in.state();
            state.docs.clear();
            state.templates.clear();
            state.requests.clear();
        }
        let url = stand_in.url.clone();
        let wrapper = self.wrapper(
            "elasticsearch",
            &[
                ("IOTFLOW__MYSQL__ENABLED", "false"),
                ("IOTFLOW__CLICKHOUSE__ENABLED", "false"),
                ("IOTFLOW__ELASTICSEARCH__ENABLED", "true"),
                ("IOTFLOW__ELASTICSEARCH__URL", &url),
            ],
        )?;
        let cpu_before = thread_cpu(STAND_IN_THREAD);
        let (run, log) = self.sink_backlog_run(topics, &format!("backlog-{name}"), wrapper)?;
        let busy = match (cpu_before, thread_cpu(STAND_IN_THREAD)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64()),
            _ => None,
        }
        .map(|cpu| {
            cpu / run
                .total
                .saturating_sub(run.first.0)
                .as_secs_f64()
                .max(1e-3)
        });
        let stand_in = self.stand_in.as_ref().expect("started above");
        let stored = stand_in.doc_count() as u64;
        // The documents take memory in this process; the next run starts empty anyway.
        stand_in.state().docs.clear();
        ensure!(
            stored == self.args.readings,
            "the job stored {stored} documents in the Elasticsearch stand-in for {} readings (see {})",
            self.args.readings,
            log.display()
        );
        Ok((run, busy))
    }

    /// The job started through `wrapper` over the whole backlog of `topics.readings`, until
    /// it exits on idleness; progress is the rows the sinks acknowledged. Also returns the
    /// job's log.
    pub(crate) fn sink_backlog_run(
        &self,
        topics: &Topics,
        name: &str,
        wrapper: PathBuf,
    ) -> Result<(BacklogRun, PathBuf)> {
        let n = self.args.readings;
        let mut spec = self.spec(topics, name.to_string(), 3);
        spec.iotflow = wrapper;
        let mut running = spec.spawn()?;
        let progress = running.wait_for(ROWS_WRITTEN, n, Duration::from_secs(600))?;
        running.finish(Duration::from_secs(60))?;
        let run = BacklogRun {
            batch_rows: None,
            rows: n,
            total: progress.done,
            first: progress.first,
            latency: prom::histogram(&progress.text, E2E_LATENCY),
            batch_write: prom::histogram(&progress.text, BATCH_WRITE),
            peak_rss: running.peak_rss(),
        };
        Ok((run, running.log().to_path_buf()))
    }

    /// Writes `<log dir>/iotflow-<sink>-only.sh`, which runs `--iotflow` with `env` added, and
    /// returns its path.
    ///
    /// `JobSpec` (src/job.rs) sets only the MySQL sink's variables, and setting variables in
    /// this process for the child to inherit would race with the threads already running
    /// (librdkafka's, tokio's, the stand-in's) that may read the environment. The script
    /// `exec`s the job, so the process `JobSpec` started, signals and kills is the job itself.
    pub(crate) fn wrapper(&self, sink: &str, env: &[(&str, &str)]) -> Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let iotflow = std::fs::canonicalize(&self.args.iotflow)
            .with_context(|| format!("resolving {}", self.args.iotflow.display()))?;
        let mut script = format!(
            "#!/bin/sh\n# Written by the e2e harness (benches/src/bin/e2e.rs): the job with only the {sink} sink.\n"
        );
        for (key, value) in env {
            script.push_str(&format!("export {key}={}\n", sh_quote(value)));
        }
        script.push_str(&format!(
            "exec {} \"$@\"\n",
            sh_quote(&iotflow.to_string_lossy())
        ));
        let path = self.args.log_dir.join(format!("iotflow-{sink}-only.sh"));
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", path.display()))?;
        Ok(path)
    }
}

/// CPU time (user + system) of this process's thread named `name`, from `/proc/self/task`;
/// `None` where there is no such thread or no `/proc`.
fn thread_cpu(name: &str) -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // `pid (comm) state ppid …`: utime and stime are the 14th and 15th fields, in clock
        // ticks (USER_HZ, 100 on Linux wherever this runs).
        let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        return Some(Duration::from_millis(ticks * 10));
    }
    None
}

/// `value` as one single-quoted `sh` word.
fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn finds_a_thread_by_name() {
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("e2e-test-busy".into())
            .spawn(move || {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(50) {
                    std::hint::black_box(0u64);
                }
                wait.recv().ok();
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let cpu = thread_cpu("e2e-test-busy");
        done.send(()).unwrap();
        thread.join().unwrap();
        assert!(cpu.is_some_and(|c| c < Duration::from_secs(5)), "{cpu:?}");
        assert_eq!(thread_cpu("no-such-thread"), None);
    }

    #[test]
    fn wrapper_values_are_quoted_for_sh() {
        assert_eq!(sh_quote("http://h:1/x"), "'http://h:1/x'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
