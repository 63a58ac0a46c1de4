//! Two device publishers on one database, on the real MariaDB and broker of the local stack:
//! when the leader's lock connection is killed (as the server's `wait_timeout` or an operator's
//! `KILL` would), the standby takes the lock and the old leader stops publishing at once,
//! goes back to standing by, and takes over again when the new leader's lock goes the same way.
//! Only one publisher ever publishes a change.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use iotflow_gen::devices;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::TopicPartitionList;

/// Kills the publishers however the test ends.
struct Publishers(Vec<Child>);

impl Drop for Publishers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(f: &Fixture, port: u16, name: &str) -> Child {
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("{}.publisher-{name}.log", f.group)),
    )
    .map(Stdio::from)
    .unwrap_or_else(|_| Stdio::null());
    publisher(f, port, log)
}

/// Records the publisher has had acknowledged (upserts and tombstones).
fn published(port: u16, child: &mut Child) -> f64 {
    metric_sum(
        &scrape_running(port, child),
        "iotflow_publisher_records_total",
        &[],
    )
}

fn snapshot_devices(port: u16, child: &mut Child) -> f64 {
    metric_sum(
        &scrape_running(port, child),
        "iotflow_publisher_snapshot_devices",
        &[],
    )
}

/// The connection holding the fixture's publisher lock, if any.
fn lock_holder(f: &Fixture) -> Option<u64> {
    f.query::<Option<u64>>(&format!(
        "SELECT IS_USED_LOCK('iotflow-publish-devices-{}')",
        f.db
    ))
    .into_iter()
    .next()
    .flatten()
}

/// Connections of this fixture's database waiting in `GET_LOCK`: standing-by publishers.
fn standbys(f: &Fixture) -> u64 {
    f.query::<u64>(&format!(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock' AND DB = '{}'",
        f.db
    ))[0]
}

fn outbox(f: &Fixture) -> u64 {
    f.query::<u64>("SELECT COUNT(*) FROM device_info_changes")[0]
}

fn sql(f: &Fixture, statement: &str) {
    let _: Vec<u8> = f.query(statement);
}

/// The broadcast topic's records: (key, company), in order.
fn topic_companies(f: &Fixture, min: usize) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}-reader", f.group))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&f.broadcast, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut records = Vec::new();
    let start = Instant::now();
    let mut quiet = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet = Instant::now();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let state = iotflow_publisher::fold_records(&[(
                    key.clone(),
                    m.payload().map(<[u8]>::to_vec),
                )]);
                records.push((key.clone(), state.get(&key).and_then(|d| d.company.clone())));
            }
            Some(Err(_)) => std::thread::sleep(Duration::from_millis(200)),
            None if records.len() >= min && quiet.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    records
}

#[test]
fn a_leader_whose_lock_connection_is_killed_stops_publishing_and_stands_by() {
    let f = Fixture::new("publisher-leadership", 1);
    let all = devices(10, 11);
    seed_device_info(&f, &all);
    let (port_a, port_b) = (free_port(), free_port());
    let mut children = Publishers(vec![start(&f, port_a, "a")]);

    // A leads: it published the snapshot. Then B starts and stands by in GET_LOCK.
    wait_for("A's snapshot", Duration::from_secs(30), || {
        (snapshot_devices(port_a, &mut children.0[0]) == 10.0).then_some(())
    });
    let a_lock = lock_holder(&f).expect("A holds the lock");
    children.0.push(start(&f, port_b, "b"));
    wait_for("B standing by", Duration::from_secs(30), || {
        (standbys(&f) >= 1).then_some(())
    });
    assert_eq!(
        snapshot_devices(port_b, &mut children.0[1]),
        0.0,
        "B is a standby"
    );

    // A's lock connection is killed. B, waiting in GET_LOCK, gets the lock and publishes its
    // snapshot. A is idle (no change waiting), so what it has published stays at `a_before`
    // unless it keeps publishing beside B.
    let a_before = published(port_a, &mut children.0[0]);
    sql(&f, &format!("KILL {a_lock}"));
    wait_for("B's snapshot", Duration::from_secs(30), || {
        (snapshot_devices(port_b, &mut children.0[1]) == 10.0).then_some(())
    });
    let b_lock = lock_holder(&f).expect("B holds the lock");
    assert_ne!(b_lock, a_lock);

    // Changes one at a time, each published before the next: with two publishers polling the
    // outbox, the old leader would take some of them.
    let rounds = 10;
    let mut expected = BTreeMap::new();
    for i in 0..rounds {
        let id = &all[i % all.len()].pboxid;
        let company = format!("after-kill-{i}");
        sql(
            &f,
            &format!("UPDATE device_info SET company = '{company}' WHERE pboxid = '{id}'"),
        );
        expected.insert(id.clone(), company);
        wait_for("the change published", Duration::from_secs(30), || {
            (outbox(&f) == 0).then_some(())
        });
    }
    let a_after = published(port_a, &mut children.0[0]);
    assert_eq!(
        a_after,
        a_before,
        "the old leader published {} records after losing its lock",
        a_after - a_before
    );
    let b_published = published(port_b, &mut children.0[1]);
    assert!(
        b_published >= (10 + rounds) as f64,
        "B published its snapshot and every change: {b_published}"
    );

    // A went back to standing by; when B's lock connection is killed in turn, A takes over,
    // publishes its snapshot again and then the changes, and B stops.
    wait_for("A standing by", Duration::from_secs(30), || {
        (standbys(&f) >= 1).then_some(())
    });
    let b_before = published(port_b, &mut children.0[1]);
    sql(&f, &format!("KILL {b_lock}"));
    wait_for("A's second snapshot", Duration::from_secs(30), || {
        (published(port_a, &mut children.0[0]) >= a_after + 10.0).then_some(())
    });
    let last = &all[0].pboxid;
    sql(
        &f,
        &format!("UPDATE device_info SET company = 'back-to-a' WHERE pboxid = '{last}'"),
    );
    expected.insert(last.clone(), "back-to-a".into());
    wait_for("the last change published", Duration::from_secs(30), || {
        (outbox(&f) == 0).then_some(())
    });
    assert!(published(port_a, &mut children.0[0]) >= a_after + 11.0);
    assert_eq!(
        published(port_b, &mut children.0[1]),
        b_before,
        "B published nothing after losing its lock"
    );

    // The topic ends with every change, in order per device.
    let records = topic_companies(&f, 10 + 10 + rounds + 1);
    let mut last_seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (key, company) in records {
        last_seen.insert(key, company);
    }
    for (id, company) in &expected {
        assert_eq!(
            last_seen.get(id).cloned().flatten().as_deref(),
            Some(company.as_str()),
            "{id}"
        );
    }
}
