//! A real Prometheus (Debian's 2.42) scraping a real running job every second, with the
//! project's rule files loaded: the old Flink system's three PromQL queries, rewritten for
//! iotflow's names (docs/metrics.md), return what they should; the job's parse successes in
//! Prometheus equal the valid readings produced, exactly; the recording rules have values.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};
use serde_json::Value;

/// Kills the child when dropped (also when the test panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A Prometheus server of this test: killed, and its directory removed, when dropped (also on
/// panic, when its log is printed first).
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Starts `prometheus` with `config` on a free loopback port, a fresh TSDB, and waits for
    /// `/-/ready`.
    fn start(dir: PathBuf, config: &str) -> Prometheus {
        std::fs::create_dir_all(&dir).unwrap();
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "`prometheus` is not on PATH: run `bash deploy/local/install.sh` (it installs \
                 Debian's prometheus package)"
            ),
            Err(e) => panic!("cannot start prometheus: {e}"),
        };
        let mut p = Prometheus { child, dir, port };
        wait_for("Prometheus /-/ready", Duration::from_secs(30), || {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}) at start:\n{}", p.log());
            }
            http_get(p.port, "/-/ready").filter(|(code, _)| *code == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's result vector: (labels, value) per series.
    fn query(&self, promql: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let (code, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", percent_encode(promql)),
        )
        .expect("Prometheus answers");
        let doc: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{promql}: not JSON ({e}): {body}"));
        assert!(
            code == 200 && doc["status"] == "success",
            "{promql}: HTTP {code}: {body}"
        );
        assert_eq!(doc["data"]["resultType"], "vector", "{promql}");
        doc["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (r["metric"].as_object().unwrap().clone(), value)
            })
            .collect()
    }

    /// The single value of a query that returns one series without labels, if any.
    fn scalar(&self, promql: &str) -> Option<f64> {
        let r = self.query(promql);
        assert!(r.len() <= 1, "{promql}: more than one series: {r:?}");
        r.first().map(|(_, v)| *v)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("prometheus log:\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// GET `path` from 127.0.0.1:`port`: status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    common::http_get(port, path, Duration::from_secs(30))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/prometheus/rules")
        .canonicalize()
        .expect("deploy/prometheus/rules")
}

#[test]
fn old_system_queries_work_on_a_real_prometheus() {
    // Before anything else: without Prometheus this test cannot say anything.
    match Command::new("prometheus").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`prometheus --version` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "`prometheus` is not on PATH ({e}): run `bash deploy/local/install.sh` (it installs \
             Debian's prometheus package)"
        ),
    }

    let f = Fixture::new("prometheus", 4);
    let options = GenOptions {
        devices: 100,
        count: 20_000,
        malformed_share: 0.02,
        seed: 23,
        ..Default::default()
    };
    let valid = Generator::new(options.clone())
        .filter(|g| g.expected.is_some())
        .count() as u64;
    let malformed = options.count - valid;
    publish_devices(&brokers(), &f.broadcast, &devices(100, 23)).unwrap();

    let port = free_port();
    let mut job = KillOnDrop(f.job(2, port).spawn().unwrap());
    let rules = rules_dir();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}/*.yml\n\
         scrape_configs:\n  - job_name: iotflow-stream\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n",
        rules = rules.display()
    );
    let prom = Prometheus::start(
        std::env::temp_dir().join(format!("iotflow-prometheus-{}", f.group)),
        &config,
    );
    // Both rule files loaded from the project's deploy/prometheus/rules.
    let (_, rules_json) = http_get(prom.port, "/api/v1/rules").unwrap();
    for name in [
        "job_name:iotflow_parse_success:rate1m",
        "job_name_sink:iotflow_sink_rows_written:rate1m",
        "IotflowJobDown",
    ] {
        assert!(
            rules_json.contains(name),
            "rule {name} not loaded: {rules_json}"
        );
    }

    // Readings arrive at 1000/s for 20 s while Prometheus watches.
    let (b, topic, o) = (brokers(), f.topic.clone(), options.clone());
    let producer = std::thread::spawn(move || {
        produce(&b, &topic, Generator::new(o), 1_000.0, |_| {}).unwrap()
    });

    let text = scrape_running(port, &mut job.0);
    let job_id = iotflow_metrics::Exposition::parse(&text)
        .first("iotflow_process_start_time_seconds")
        .and_then(|s| s.label("job_id"))
        .expect("job_id label")
        .to_string();
    let name = f.name.clone();

    // 1. Parse successes per second by job id.
    //    old: sum(rate(flink_taskmanager_job_task_operator_parse_success_count[5m])) by (job_id)
    let by_job_id = "sum(rate(iotflow_parse_success_total[5m])) by (job_id)";
    let v = wait_for(by_job_id, Duration::from_secs(180), || {
        let _ = scrape_running(port, &mut job.0);
        prom.query(by_job_id)
            .into_iter()
            .find(|(m, v)| m.get("job_id").and_then(Value::as_str) == Some(&job_id) && *v > 0.0)
    });
    eprintln!("{by_job_id} -> {v:?}");

    // 2. For one job, by name.
    //    old: sum(rate(flink_taskmanager_job_task_operator_parse_success_count{job_name="Dynamic_mysql_sink"}[5m]))
    let by_name = format!("sum(rate(iotflow_parse_success_total{{job_name=\"{name}\"}}[5m]))");
    let v = wait_for(&by_name, Duration::from_secs(60), || {
        prom.scalar(&by_name).filter(|v| *v > 0.0)
    });
    eprintln!("{by_name} -> {v}");

    // 3. By operator name (Flink's operator_name is iotflow's operator label).
    //    old: sum(rate(flink_taskmanager_job_task_operator_parse_success_count[5m])) by (operator_name)
    let by_operator = "sum(rate(iotflow_parse_success_total[5m])) by (operator)";
    let v = wait_for(by_operator, Duration::from_secs(60), || {
        let r = prom.query(by_operator);
        r.iter()
            .any(|(m, v)| m.get("operator").and_then(Value::as_str) == Some("parse") && *v > 0.0)
            .then_some(r)
    });
    eprintln!("{by_operator} -> {v:?}");
    assert!(
        v.iter()
            .all(|(m, _)| m.get("operator").and_then(Value::as_str) == Some("parse")),
        "only the parse operator counts parse successes: {v:?}"
    );

    // A recording rule of deploy/prometheus/rules/recording.yml, evaluated by Prometheus.
    let recorded = format!("job_name:iotflow_parse_success:rate1m{{job_name=\"{name}\"}}");
    let v = wait_for(&recorded, Duration::from_secs(60), || {
        prom.query(&recorded)
            .first()
            .map(|(_, v)| *v)
            .filter(|v| *v > 0.0)
    });
    eprintln!("{recorded} -> {v}");
    let rows_rule = format!(
        "job_name_sink:iotflow_sink_rows_written:rate1m{{job_name=\"{name}\",sink=\"mysql\"}}"
    );
    let v = wait_for(&rows_rule, Duration::from_secs(60), || {
        prom.query(&rows_rule)
            .first()
            .map(|(_, v)| *v)
            .filter(|v| *v > 0.0)
    });
    eprintln!("{rows_rule} -> {v}");

    // Once the job has drained, Prometheus holds the exact count.
    producer.join().unwrap();
    let label = format!("job_name=\"{name}\"");
    wait_for(
        "the job to parse and write everything",
        Duration::from_secs(180),
        || {
            let t = scrape_running(port, &mut job.0);
            let parsed = metric_sum(&t, "iotflow_parse_success_total", &[&label]) as u64;
            let written = metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) as u64;
            (parsed == valid && written == valid).then_some(())
        },
    );
    let total = format!("sum(iotflow_parse_success_total{{job_name=\"{name}\"}})");
    let got = wait_for(&total, Duration::from_secs(30), || {
        prom.scalar(&total).filter(|v| *v as u64 == valid)
    });
    assert_eq!(got, valid as f64, "{total}");
    eprintln!("{total} -> {got} (valid readings produced: {valid})");
    let failures = format!("sum(iotflow_parse_failure_total{{job_name=\"{name}\"}})");
    let got = wait_for(&failures, Duration::from_secs(30), || {
        prom.scalar(&failures).filter(|v| *v as u64 == malformed)
    });
    eprintln!("{failures} -> {got} (malformed produced: {malformed})");
    let received = format!(
        "sum(iotflow_kafka_messages_received_total{{job_name=\"{name}\",operator=\"kafka-source\"}})"
    );
    let got = wait_for(&received, Duration::from_secs(30), || {
        prom.scalar(&received)
            .filter(|v| *v as u64 == options.count)
    });
    eprintln!("{received} -> {got}");
    assert_eq!(prom.scalar("up{job=\"iotflow-stream\"}"), Some(1.0));

    drop(prom);
    drop(job);
}
