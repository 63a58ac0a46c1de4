//! `iotflow status` against a real running job (real broker, real MariaDB): it reports the job
//! up with its name, id and throughput; endpoints that refuse or never answer are DOWN with the
//! reason and make the exit code 1.

mod common;

use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// Stops the producer thread when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn status(args: &[&str], env: &[(&str, String)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .arg("status")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running iotflow status");
    eprintln!(
        "$ iotflow status {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn label_of(text: &str, metric: &str, label: &str) -> String {
    iotflow_metrics::Exposition::parse(text)
        .first(metric)
        .unwrap_or_else(|| panic!("{metric} missing from /metrics"))
        .label(label)
        .unwrap_or_else(|| panic!("{metric} has no label {label}"))
        .to_string()
}

#[test]
fn status_reports_a_running_job_and_down_endpoints() {
    let f = Fixture::new("status", 2);
    publish_devices(&brokers(), &f.broadcast, &devices(50, 3)).unwrap();
    // Readings keep arriving at 500/s until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_producer = StopOnDrop(stop.clone());
    let (b, topic, flag) = (brokers(), f.topic.clone(), stop.clone());
    let producer = std::thread::spawn(move || {
        let options = GenOptions {
            devices: 50,
            count: 0,
            malformed_share: 0.01,
            seed: 3,
            ..Default::default()
        };
        let readings = Generator::new(options).take_while(move |_| !flag.load(Ordering::SeqCst));
        produce(&b, &topic, readings, 500.0, |_| {}).unwrap()
    });

    let port = free_port();
    let mut job = KillOnDrop(f.job(2, port).spawn().unwrap());
    let label = format!("job_name=\"{}\"", f.name);
    wait_for("the job to write rows", Duration::from_secs(120), || {
        let t = scrape_running(port, &mut job.0);
        (metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) > 0.0).then_some(())
    });
    let job_id = label_of(
        &scrape_running(port, &mut job.0),
        "iotflow_process_start_time_seconds",
        "job_id",
    );
    let endpoint = format!("127.0.0.1:{port}");

    // Up, with the job's name and id, and data flowing through it in the 1 s between scrapes.
    let report = wait_for(
        "status to see readings received and rows written",
        Duration::from_secs(30),
        || {
            let out = status(&["--endpoint", &endpoint, "--json"], &[]);
            assert_eq!(out.status.code(), Some(0), "exit code with the job up");
            let doc = json(&out);
            let p = doc["processes"][0].clone();
            (p["received_per_second"].as_f64()? > 0.0 && p["rows_per_second"].as_f64()? > 0.0)
                .then_some(doc)
        },
    );
    assert_eq!(
        (report["up"].as_u64(), report["down"].as_u64()),
        (Some(1), Some(0))
    );
    let p = &report["processes"][0];
    assert_eq!(p["status"], "UP");
    assert_eq!(p["endpoint"], endpoint.as_str());
    assert_eq!(p["kind"], "stream");
    assert_eq!(p["job_name"], f.name.as_str());
    assert_eq!(p["job_id"], job_id.as_str());
    let uptime = p["uptime_seconds"].as_f64().unwrap();
    assert!(uptime > 0.0 && uptime < 600.0, "uptime {uptime}");
    assert!(p["parse_success_per_second"].as_f64().unwrap() >= 0.0);
    let sinks = p["sinks"].as_array().unwrap();
    assert_eq!(sinks.len(), 1, "{sinks:?}");
    assert_eq!(sinks[0]["sink"], "mysql");
    assert!(sinks[0]["rows_written_total"].as_f64().unwrap() > 0.0);
    assert_eq!(sinks[0]["definite_errors_total"].as_f64(), Some(0.0));
    assert!(
        ["OK", "IDLE"].contains(&p["sink_state"].as_str().unwrap()),
        "{p}"
    );

    // The table, as an operator sees it.
    let out = status(&["--endpoint", &endpoint], &[]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&endpoint))
        .unwrap_or_else(|| panic!("no line for {endpoint}:\n{text}"));
    assert!(line.starts_with("UP"), "{text}");
    assert!(line.contains(&f.name) && line.contains(&job_id), "{text}");
    assert!(line.contains("mysql "), "{text}");

    // Defaults from the configuration (here its environment overrides): metrics.listen for
    // process 0 and the publisher's metrics_listen, where nothing runs.
    let dead = free_port();
    let env = [
        ("IOTFLOW__METRICS__LISTEN", endpoint.clone()),
        (
            "IOTFLOW__PUBLISHER__METRICS_LISTEN",
            format!("127.0.0.1:{dead}"),
        ),
    ];
    let out = status(&["--json", "--no-publisher"], &env);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(json(&out)["processes"][0]["job_name"], f.name.as_str());
    let out = status(&["--json", "--interval-ms", "200"], &env);
    assert_eq!(out.status.code(), Some(1), "the publisher is not running");
    let doc = json(&out);
    assert_eq!(doc["processes"][0]["status"], "UP");
    assert_eq!(doc["processes"][1]["status"], "DOWN");
    assert_eq!(
        doc["processes"][1]["endpoint"],
        format!("127.0.0.1:{dead}").as_str()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 endpoint(s) down"));

    // A dead endpoint alone: DOWN with the reason, exit code 1, no panic.
    let out = status(&["--endpoint", &format!("127.0.0.1:{dead}"), "--json"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    let p = &json(&out)["processes"][0];
    assert_eq!(
        (p["status"].as_str(), p["up"].as_bool()),
        (Some("DOWN"), Some(false))
    );
    assert!(p["reason"].as_str().unwrap().contains("refused"), "{p}");
    let out = status(&["--endpoint", &format!("127.0.0.1:{dead}")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("DOWN")
            && l.contains(&dead.to_string())
            && l.ends_with("connection refused")),
        "{text}"
    );

    // A file_sd targets file with the job, a refused port and a port that accepts but never
    // answers (a listener nobody serves): one UP, two DOWN, the file's labels kept.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let targets = std::env::temp_dir().join(format!("{}-targets.json", f.group));
    std::fs::write(
        &targets,
        serde_json::json!([
            {"targets": [endpoint], "labels": {"job": "iotflow-stream", "process": "0"}},
            {"targets": [format!("127.0.0.1:{dead}"), format!("127.0.0.1:{silent_port}")],
             "labels": {"job": "iotflow-stream", "process": "1"}},
        ])
        .to_string(),
    )
    .unwrap();
    let out = status(
        &[
            "--targets",
            targets.to_str().unwrap(),
            "--json",
            "--timeout-ms",
            "500",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&targets);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    let ps = doc["processes"].as_array().unwrap();
    assert_eq!(ps.len(), 3);
    assert_eq!(ps[0]["status"], "UP");
    assert_eq!(ps[0]["labels"]["process"], "0");
    assert_eq!(ps[0]["job_name"], f.name.as_str());
    assert_eq!(ps[1]["status"], "DOWN");
    assert_eq!(ps[1]["labels"]["process"], "1");
    assert_eq!(ps[2]["status"], "DOWN");
    assert!(
        ps[2]["reason"].as_str().unwrap().contains("no answer"),
        "{}",
        ps[2]
    );
    drop(silent);

    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    drop(job);
}
