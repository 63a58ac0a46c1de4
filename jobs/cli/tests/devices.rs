//! Device business info end to end, on MariaDB and the broker: `device_info` edited in MySQL →
//! `iotflow publish-devices` → the broadcast topic → the running job's dimension → the business
//! columns of readings stored after each change. Readings stored before a change keep their
//! values; a restart of the publisher (SIGKILL, with changes made while it was down) and of the
//! job (rebuilding the dimension from the topic) loses nothing.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::*;
use iotflow_gen::devices;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Produces `n` readings of `pboxid` at `hour`:00:00 + i seconds on 2025-04-10, metric 60.
fn send(f: &Fixture, pboxid: &str, hour: u32, from: u32, n: u32) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for i in from..from + n {
        let json = format!(
            r#"{{"event_time":"2025-04-10 {hour:02}:{:02}:{:02}","metric":60,"pboxid":"{pboxid}","latitude":31.2,"longitude":121.5}}"#,
            i / 60,
            i % 60
        );
        producer
            .send(BaseRecord::to(&f.topic).key(pboxid).payload(&json))
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The company stored with each reading of `pboxid` in `hour`, waiting until `n` are there.
fn companies(f: &Fixture, pboxid: &str, hour: u32, n: usize) -> Vec<Option<String>> {
    let sql = format!(
        "SELECT company FROM iot_data WHERE pboxid = '{pboxid}' AND event_time >= '2025-04-10 {hour:02}:00:00' \
         AND event_time < '2025-04-10 {hour:02}:59:59.999' ORDER BY event_time"
    );
    wait_for(
        &format!("{n} rows of {pboxid} at hour {hour}"),
        Duration::from_secs(60),
        || {
            let rows: Vec<Option<String>> = if f.row_count() == 0 {
                Vec::new()
            } else {
                f.query(&sql)
            };
            (rows.len() >= n).then_some(rows)
        },
    )
}

/// Sends probe readings of `pboxid` in `hour`, one at a time, until one is stored with
/// `company`: the job has applied the change. Returns how many probes it took.
fn until_applied(f: &Fixture, pboxid: &str, hour: u32, company: Option<&str>) -> u32 {
    let mut sent = 0;
    loop {
        send(f, pboxid, hour, sent, 1);
        sent += 1;
        let got = companies(f, pboxid, hour, sent as usize);
        if got.last().unwrap().as_deref() == company {
            return sent;
        }
        assert!(sent < 60, "{pboxid} never got company {company:?}: {got:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// After the change is visible, every later reading carries it: 30 more, all equal.
/// Returns what is stored for that hour.
fn all_after(f: &Fixture, pboxid: &str, hour: u32, company: Option<&str>) -> Vec<Option<String>> {
    let probes = until_applied(f, pboxid, hour, company);
    send(f, pboxid, hour, probes, 30);
    let got = companies(f, pboxid, hour, probes as usize + 30);
    assert!(
        got[probes as usize - 1..]
            .iter()
            .all(|c| c.as_deref() == company),
        "{pboxid} at hour {hour}: after the change was applied, readings carried {got:?}"
    );
    got
}

fn sql(f: &Fixture, statement: &str) {
    let _: Vec<u8> = f.query(statement);
}

#[test]
fn changes_in_mysql_reach_the_enrichment_and_survive_restarts() {
    let f = Fixture::new("devices", 2);
    let all = devices(20, 5);
    let (d, n, u) = (
        all[0].pboxid.clone(),
        "pbox-new-1".to_string(),
        all[1].pboxid.clone(),
    );
    let original = all[0].company.clone().unwrap();
    let untouched = all[1].company.clone().unwrap();
    seed_device_info(&f, &all);

    let publisher_port = free_port();
    let mut publisher_child = publisher(&f, publisher_port, std::process::Stdio::piped());
    let job_port = free_port();
    let mut job = f.job(2, job_port).spawn().unwrap();

    // Hour 1: the snapshot's values.
    let hour1 = all_after(&f, &d, 1, Some(&original));
    // Hour 2: an update.
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'NewCo' WHERE pboxid = '{d}'"),
    );
    let hour2 = all_after(&f, &d, 2, Some("NewCo"));
    // Hour 3: a device inserted while everything runs.
    sql(
        &f,
        &format!(
        "INSERT INTO device_info (pboxid, company, status) VALUES ('{n}', 'Fresh Ltd', 'active')"
    ),
    );
    let hour3 = all_after(&f, &n, 3, Some("Fresh Ltd"));
    // Hour 4: a delete: readings are stored with empty business columns.
    sql(&f, &format!("DELETE FROM device_info WHERE pboxid = '{d}'"));
    let hour4 = all_after(&f, &d, 4, None);

    // The publisher dies; changes made meanwhile are published when it is back.
    publisher_child.kill().unwrap();
    publisher_child.wait().unwrap();
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'Later Inc' WHERE pboxid = '{n}'"),
    );
    sql(
        &f,
        &format!("INSERT INTO device_info (pboxid, company) VALUES ('{d}', 'Back Again')"),
    );
    let backlog: Vec<u64> = f.query("SELECT COUNT(*) FROM device_info_changes");
    assert!(backlog[0] >= 2, "changes wait in the outbox: {backlog:?}");
    let mut publisher_child = publisher(&f, publisher_port, std::process::Stdio::piped());
    all_after(&f, &n, 5, Some("Later Inc"));
    all_after(&f, &d, 5, Some("Back Again"));
    let published = wait_for("the publisher's metrics", Duration::from_secs(30), || {
        let t = scrape(publisher_port)?;
        (metric_sum(&t, "iotflow_publisher_backlog", &[]) == 0.0
            && metric_sum(&t, "iotflow_publisher_records_total", &[]) > 0.0)
            .then_some(t)
    });
    promtool_check_metrics(&published);
    assert!(published.contains("iotflow_publisher_lag_seconds"));
    assert_eq!(
        metric_sum(&published, "iotflow_publisher_snapshot_devices", &[]),
        21.0,
        "20 devices and the inserted one, one of them deleted and re-inserted"
    );

    // The job restarts (SIGTERM drains), rebuilds the dimension from the topic alone.
    let job_metrics = scrape_running(job_port, &mut job);
    assert!(metric_sum(&job_metrics, "iotflow_dimension_updates_total", &[]) > 0.0);
    sigterm(&job);
    let (ok, stderr) = finish(job, Duration::from_secs(60));
    assert!(ok, "job failed:\n{stderr}");
    publisher_child.kill().unwrap();
    publisher_child.wait().unwrap();
    let job = f.job(2, free_port()).spawn().unwrap();
    all_after(&f, &d, 6, Some("Back Again"));
    all_after(&f, &n, 6, Some("Later Inc"));
    all_after(&f, &u, 6, Some(&untouched));

    // Readings stored before each change kept the values they were stored with.
    assert_eq!(companies(&f, &d, 1, hour1.len()), hour1);
    assert_eq!(companies(&f, &d, 2, hour2.len()), hour2);
    assert_eq!(companies(&f, &n, 3, hour3.len()), hour3);
    assert_eq!(companies(&f, &d, 4, hour4.len()), hour4);
    let mut job = job;
    job.kill().unwrap();
    job.wait().unwrap();
}

/// SIGTERM, for a drain.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
