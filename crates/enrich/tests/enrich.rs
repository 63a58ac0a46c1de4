//! Enrichment with device updates and deletes mid-stream, on 1 worker, 2 workers and
//! 2 processes (the dimension's types cross a real process boundary there).

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use iotflow_enrich::{device_updates, replicate_dimension, EnrichWith};
use iotflow_model::{Decimal, DeviceChange, DeviceInfo, NaiveDateTime, Reading, SourceRef};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec as InputHandle, ProbeHandle};
use timely::{CommunicationConfig, Config, WorkerConfig};

fn device(id: &str, company: &str) -> DeviceChange {
    DeviceChange::Upsert(DeviceInfo {
        pboxid: id.into(),
        company: Some(company.into()),
        work_threshold: Some(Decimal::from_str("50.5").unwrap()),
        ..Default::default()
    })
}

fn reading(id: &str, n: i64) -> Reading {
    Reading {
        event_time: NaiveDateTime::parse_from_str("2025-04-10 08:00:00", "%Y-%m-%d %H:%M:%S")
            .unwrap(),
        metric: Decimal::new(n, 1),
        pboxid: id.into(),
        latitude: Decimal::ZERO,
        longitude: Decimal::ZERO,
        source: SourceRef {
            partition: 0,
            offset: n,
        },
        kafka_ts_ms: None,
    }
}

/// The script: (time, device changes, readings). Devices change between readings.
fn script() -> Vec<(u64, Vec<DeviceChange>, Vec<Reading>)> {
    vec![
        (
            1,
            vec![device("A", "acme"), device("B", "bolt")],
            vec![reading("A", 1), reading("B", 2), reading("C", 3)],
        ),
        (
            2,
            vec![device("A", "acme-2"), DeviceChange::Delete("B".into())],
            vec![reading("A", 4), reading("B", 5)],
        ),
        (
            3,
            vec![device("B", "bolt-3"), device("C", "core")],
            vec![reading("A", 6), reading("B", 7), reading("C", 8)],
        ),
        // A reading with no change at its time still sees the latest record.
        (5, vec![], vec![reading("C", 9)]),
        (
            6,
            vec![DeviceChange::Delete("A".into()), device("A", "acme-6")],
            vec![reading("A", 10)],
        ),
    ]
}

/// What each reading must be joined with: (offset, company or "-").
fn expected() -> Vec<String> {
    let mut v: Vec<String> = [
        (1, "acme"),
        (2, "bolt"),
        (3, "-"),
        (4, "acme-2"),
        (5, "-"),
        (6, "acme-2"),
        (7, "bolt-3"),
        (8, "core"),
        (9, "core"),
        (10, "acme-6"),
    ]
    .iter()
    .map(|(o, c)| format!("{o} {c}"))
    .collect();
    v.sort();
    v
}

/// Runs the script on `config`; returns this process's results.
fn run(config: Config) -> Vec<String> {
    let results = Arc::new(Mutex::new(Vec::new()));
    let sink = results.clone();
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let peers = worker.peers();
        let sink = sink.clone();
        let mut readings: InputHandle<u64, Reading> = InputHandle::new();
        let mut changes: InputHandle<u64, DeviceChange> = InputHandle::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let dim = replicate_dimension(device_updates(scope.input_from(&mut changes)));
            let metrics = iotflow_metrics::detached().enrich("enrich", index);
            scope
                .input_from(&mut readings)
                .enrich_with(&dim, metrics)
                .inspect(move |e| {
                    let company = e
                        .device
                        .as_ref()
                        .and_then(|d| d.company.clone())
                        .unwrap_or("-".into());
                    // Business records survive the process boundary exactly.
                    if let Some(d) = &e.device {
                        assert_eq!(d.work_threshold, Some(Decimal::from_str("50.5").unwrap()));
                    }
                    sink.lock()
                        .unwrap()
                        .push(format!("{} {}", e.reading.source.offset, company));
                })
                .probe_with(&probe);
        });
        for (time, cs, rs) in script() {
            readings.advance_to(time);
            changes.advance_to(time);
            // Device changes come from one worker (as one Kafka partition would), readings
            // from all of them.
            if index == 0 {
                for c in cs {
                    changes.send(c);
                }
            }
            for (i, r) in rs.into_iter().enumerate() {
                if i % peers == index {
                    readings.send(r);
                }
            }
        }
        readings.close();
        changes.close();
        while !probe.done() {
            worker.step();
        }
    })
    .unwrap();
    drop(guards);
    let mut v = results.lock().unwrap().clone();
    v.sort();
    v
}

#[test]
fn enrichment_follows_updates_and_deletes_on_one_worker() {
    assert_eq!(run(Config::thread()), expected());
}

#[test]
fn enrichment_follows_updates_and_deletes_on_two_workers() {
    assert_eq!(run(Config::process(2)), expected());
}

const CHILD_ENV: &str = "IOTFLOW_ENRICH_TEST_PROCESS";
const ADDRS_ENV: &str = "IOTFLOW_ENRICH_TEST_ADDRS";

/// One process of the two-process test; does nothing unless started by it.
#[test]
#[ignore = "run as a child process by enrichment_across_two_processes"]
fn two_process_child() {
    let Ok(process) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addresses: Vec<String> = std::env::var(ADDRS_ENV)
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let config = Config {
        communication: CommunicationConfig::Cluster {
            threads: 1,
            process: process.parse().unwrap(),
            addresses,
            report: false,
            zerocopy: false,
        },
        worker: WorkerConfig::default(),
    };
    for line in run(config) {
        println!("RESULT {line}");
    }
}

#[test]
fn enrichment_across_two_processes() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let addrs = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|p| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "two_process_child",
                    "--include-ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, p.to_string())
                .env(ADDRS_ENV, &addrs)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut all = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child process failed:\n{stdout}");
        all.extend(
            stdout
                .lines()
                .filter_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_string())),
        );
    }
    all.sort();
    assert_eq!(all, expected());
}

/// Readings that wait for a lagging dimension count into the worker's back-pressure (so the
/// source pauses instead of the stash growing without bound) and into the buffered gauge, and
/// leave both once they are enriched.
#[test]
fn readings_waiting_for_the_dimension_count_into_back_pressure() {
    use std::cell::Cell;
    use std::rc::Rc;
    let (seen, gauge_seen, after) = timely::execute_directly(|worker| {
        let mut readings: InputHandle<u64, Reading> = InputHandle::new();
        let mut changes: InputHandle<u64, DeviceChange> = InputHandle::new();
        let probe = ProbeHandle::new();
        let pressure = Rc::new(Cell::new(0usize));
        let metrics = iotflow_metrics::detached().enrich("enrich", 0);
        let held = metrics.held.clone();
        let p = pressure.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let dim = replicate_dimension(device_updates(scope.input_from(&mut changes)));
            scope
                .input_from(&mut readings)
                .enrich_with_pressure(&dim, metrics, p)
                .probe_with(&probe);
        });
        changes.send(device("A", "acme"));
        for n in 0..500 {
            readings.send(reading("A", n));
        }
        readings.advance_to(5);
        // The dimension stays at time 0: every reading waits.
        for _ in 0..50 {
            worker.step();
        }
        let seen = pressure.get();
        let gauge_seen = held.get();
        changes.advance_to(5);
        while probe.less_than(&5) {
            worker.step();
        }
        (seen, gauge_seen, (pressure.get(), held.get()))
    });
    assert_eq!(seen, 500, "stashed readings in the back-pressure");
    assert_eq!(gauge_seen, 500, "and in iotflow_buffered_records");
    assert_eq!(after, (0, 0), "released once enriched");
}
