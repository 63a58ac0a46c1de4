//! The device publisher under a MariaDB restart and a broker restart: it keeps running, counts
//! its failed rounds, and once the server is back every change made around the outage reaches
//! the broadcast topic, in order per device. (Its own test binary: cargo runs test binaries one
//! at a time, so restarting the servers touches no other test.)

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::devices;
use iotflow_model::DeviceInfo;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

/// The broadcast topic folded the way the job folds it (last record per key, tombstones
/// remove), once it holds at least `min` records.
fn topic_state(f: &Fixture, min: usize) -> BTreeMap<String, DeviceInfo> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}-reader", f.group))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Every partition: a broker that lost the topic re-creates it with its own default count.
    let partitions = wait_for("the topic's metadata", Duration::from_secs(30), || {
        let m = consumer
            .fetch_metadata(Some(&f.broadcast), Duration::from_secs(5))
            .ok()?;
        let n = m.topics().first()?.partitions().len();
        (n > 0).then_some(n)
    });
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&f.broadcast, p as i32, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    let start = Instant::now();
    let mut quiet = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                records.push((
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    m.payload().map(<[u8]>::to_vec),
                ));
            }
            Some(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
            None if records.len() >= min && quiet.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    iotflow_publisher::fold_records(&records)
}

fn sql(f: &Fixture, statement: &str) {
    let _: Vec<u8> = f.query(statement);
}

fn company(state: &BTreeMap<String, DeviceInfo>, id: &str) -> Option<String> {
    state.get(id).and_then(|d| d.company.clone())
}

#[test]
fn mysql_and_broker_restarts_lose_no_change() {
    let f = Fixture::new("publisher-outages", 1);
    let all = devices(10, 9);
    seed_device_info(&f, &all);
    let port = free_port();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{}.publisher.log", f.group)))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null());
    let mut child = publisher(&f, port, log);
    let errors = |t: &str| metric_sum(t, "iotflow_publisher_errors_total", &[]);
    wait_for("the snapshot", Duration::from_secs(30), || {
        let t = scrape(port)?;
        (metric_sum(&t, "iotflow_publisher_snapshot_devices", &[]) == 10.0
            && metric_sum(&t, "iotflow_publisher_backlog", &[]) == 0.0)
            .then_some(())
    });
    let _start_again = StartAgain;

    // MariaDB goes away under the publisher and comes back.
    run_script("stop.sh", &["mariadb"]);
    wait_for(
        "failed rounds while MariaDB is down",
        Duration::from_secs(30),
        || {
            let t = scrape_running(port, &mut child);
            (errors(&t) > 0.0).then_some(())
        },
    );
    run_script("start.sh", &[]);
    let (a, b) = (&all[0].pboxid, &all[1].pboxid);
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'first' WHERE pboxid = '{a}'"),
    );
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'second' WHERE pboxid = '{a}'"),
    );
    sql(&f, &format!("DELETE FROM device_info WHERE pboxid = '{b}'"));
    wait_for("the changes published", Duration::from_secs(60), || {
        let t = scrape_running(port, &mut child);
        (metric_sum(&t, "iotflow_publisher_backlog", &[]) == 0.0
            && metric_sum(
                &t,
                "iotflow_publisher_records_total",
                &["kind=\"tombstone\""],
            ) >= 1.0)
            .then_some(())
    });
    let state = topic_state(&f, 13);
    assert_eq!(company(&state, a).as_deref(), Some("second"));
    assert!(!state.contains_key(b.as_str()), "{b} was deleted");
    assert_eq!(state.len(), 9);

    // The broker goes away; a change made meanwhile waits in the outbox until it is back.
    let before = errors(&scrape_running(port, &mut child));
    run_script("stop.sh", &["tansu"]);
    let c = &all[2].pboxid;
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'during' WHERE pboxid = '{c}'"),
    );
    let waiting: Vec<u64> = f.query("SELECT COUNT(*) FROM device_info_changes");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        f.query::<u64>("SELECT COUNT(*) FROM device_info_changes")[0],
        waiting[0].max(1),
        "the change stays in the outbox while the broker is down"
    );
    run_script("start.sh", &[]);
    wait_for(
        "the change published after the broker restart",
        Duration::from_secs(120),
        || {
            let t = scrape_running(port, &mut child);
            (metric_sum(&t, "iotflow_publisher_backlog", &[]) == 0.0
                && f.query::<u64>("SELECT COUNT(*) FROM device_info_changes")[0] == 0)
                .then_some(())
        },
    );
    // (The local broker keeps topics in memory: its restart lost the earlier records, so only
    // the change made around the outage is checked here.)
    let state = topic_state(&f, 1);
    assert_eq!(company(&state, c).as_deref(), Some("during"));
    let t = scrape_running(port, &mut child);
    assert!(errors(&t) >= before, "failed rounds are counted");
    child.kill().unwrap();
    child.wait().unwrap();
}
