//! Shared fixtures for the integration tests: a real Kafka-protocol broker and a real MariaDB,
//! found through `IOTFLOW_TEST_BROKERS` and `IOTFLOW_TEST_MYSQL_URL` (loopback defaults; start
//! them with `bash deploy/local/start.sh`). Each test gets its own topics, consumer group and
//! database, so tests can run side by side.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;

pub fn brokers() -> String {
    std::env::var("IOTFLOW_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn mysql_base_url() -> String {
    std::env::var("IOTFLOW_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://iotflow:iotflow@127.0.0.1:3306/iotflow".into())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `f` until it returns `Some`, or fails the test after `timeout` naming `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Topics, group and database of one test.
pub struct Fixture {
    pub name: String,
    pub topic: String,
    pub broadcast: String,
    pub dlq: String,
    pub group: String,
    pub db_url: String,
    pub db: String,
}

impl Fixture {
    pub fn new(name: &str, partitions: i32) -> Fixture {
        let tag = format!("{name}-{}-{}", std::process::id(), rand::random::<u32>());
        let db = format!("iotflow_t_{}", tag.replace('-', "_"));
        let f = Fixture {
            name: name.into(),
            topic: format!("iot-{tag}"),
            broadcast: format!("bc-{tag}"),
            dlq: format!("dlq-{tag}"),
            group: format!("g-{tag}"),
            db_url: mysql_base_url()
                .rsplit_once('/')
                .map(|(base, _)| format!("{base}/{db}"))
                .unwrap(),
            db,
        };
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .expect("admin client");
        let topics = [
            NewTopic::new(&f.topic, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&f.broadcast, 1, TopicReplication::Fixed(1)),
            NewTopic::new(&f.dlq, 1, TopicReplication::Fixed(1)),
        ];
        let rt = runtime();
        let results = rt
            .block_on(admin.create_topics(&topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
            .unwrap_or_else(|e| panic!("cannot create topics on {} ({e}); start the local stack: bash deploy/local/start.sh", brokers()));
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        rt.block_on(async {
            let pool = mysql_async::Pool::new(mysql_base_url().as_str());
            let mut conn = pool.get_conn().await.unwrap_or_else(|e| {
                panic!("cannot connect to MariaDB at {} ({e}); start the local stack: bash deploy/local/start.sh", mysql_base_url())
            });
            conn.query_drop(format!("CREATE DATABASE `{}`", f.db)).await.unwrap();
            drop(conn);
            pool.disconnect().await.unwrap();
        });
        f
    }

    /// The `iotflow run` command for this fixture, configured through the environment.
    pub fn job(&self, workers: usize, metrics_port: u16) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iotflow"));
        c.args(["run", "-w", &workers.to_string()])
            .env("IOTFLOW__KAFKA__BROKERS", brokers())
            .env("IOTFLOW__KAFKA__TOPIC", &self.topic)
            .env("IOTFLOW__KAFKA__BROADCAST_TOPIC", &self.broadcast)
            .env("IOTFLOW__KAFKA__DLQ_TOPIC", &self.dlq)
            .env("IOTFLOW__KAFKA__GROUP_ID", &self.group)
            .env("IOTFLOW__KAFKA__STATS_INTERVAL_SECS", "1")
            // Test readings are dated 2025 and produced now: no plausibility window (the
            // test of the window sets its own).
            .env("IOTFLOW__PARSE__MAX_EVENT_AGE_SECS", "0")
            .env("IOTFLOW__MYSQL__URL", &self.db_url)
            .env(
                "IOTFLOW__METRICS__LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .env("IOTFLOW__JOB__NAME", &self.name)
            .env("IOTFLOW_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    pub fn query<T: mysql_async::prelude::FromRow + Send + 'static>(&self, sql: &str) -> Vec<T> {
        runtime().block_on(async {
            let pool = mysql_async::Pool::new(self.db_url.as_str());
            let mut conn = pool.get_conn().await.unwrap();
            let rows = conn.query(sql).await.unwrap();
            drop(conn);
            pool.disconnect().await.unwrap();
            rows
        })
    }

    pub fn row_count(&self) -> u64 {
        let exists: Vec<String> = self.query(&format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'iot_data'",
            self.db
        ));
        if exists.is_empty() {
            return 0;
        }
        self.query::<u64>("SELECT COUNT(*) FROM iot_data")[0]
    }

    /// Every record of the dead-letter topic: (key, payload, headers).
    pub fn dead_letters(
        &self,
        expected: usize,
    ) -> Vec<(String, Vec<u8>, BTreeMap<String, String>)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("{}-dlq-reader", self.group))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.dlq, 0, rdkafka::Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let start = Instant::now();
        let mut quiet_since = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    quiet_since = Instant::now();
                    let mut headers = BTreeMap::new();
                    if let Some(h) = m.headers() {
                        for i in 0..h.count() {
                            let hdr = h.get(i);
                            headers.insert(
                                hdr.key.to_string(),
                                String::from_utf8_lossy(hdr.value.unwrap_or_default()).into_owned(),
                            );
                        }
                    }
                    out.push((
                        String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        m.payload().unwrap_or_default().to_vec(),
                        headers,
                    ));
                }
                Some(Err(e)) => panic!("reading {}: {e}", self.dlq),
                None if out.len() >= expected && quiet_since.elapsed() > Duration::from_secs(2) => {
                    break
                }
                None => {}
            }
        }
        out
    }
}

/// A child process that is killed (and reaped) if the test ends without having waited for it:
/// a failed assertion must not leave a job running and eating the machine.
pub struct Reaped(Option<Child>);

impl Reaped {
    pub fn new(child: Child) -> Reaped {
        Reaped(Some(child))
    }

    /// The child, no longer killed on drop (for [`finish`]).
    pub fn take(mut self) -> Child {
        self.0.take().expect("a child")
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child")
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "keeping database {} and topics {} for inspection",
                self.db, self.topic
            );
            return;
        }
        let db = self.db.clone();
        runtime().block_on(async move {
            let pool = mysql_async::Pool::new(mysql_base_url().as_str());
            if let Ok(mut conn) = pool.get_conn().await {
                let _ = conn
                    .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await;
            }
            let _ = pool.disconnect().await;
            // The ClickHouse database of the same name, if the test made one.
            let _ = clickhouse::Client::default()
                .with_url(clickhouse_url())
                .with_validation(false)
                .query(&format!("DROP DATABASE IF EXISTS {db}"))
                .execute()
                .await;
        });
    }
}

/// Creates `name` with `partitions` partitions (for tests that need a shape the fixture's
/// topics don't have).
pub fn create_topic(name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = runtime()
        .block_on(admin.create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .unwrap_or_else(|e| panic!("cannot create topic {name} on {}: {e}", brokers()));
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port` through reqwest: status code and body, or `None` when
/// nothing answers within `timeout`.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .ok()?;
    let response = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().ok()?))
}

/// GET /metrics.
pub fn scrape(port: u16) -> Option<String> {
    http_get(port, "/metrics", Duration::from_secs(30)).map(|(_, body)| body)
}

/// Sum of a metric's samples whose label set contains every `label="value"` in `filter`
/// (read with iotflow's one exposition parser, `iotflow_metrics::exposition`).
pub fn metric_sum(text: &str, name: &str, filter: &[&str]) -> f64 {
    let filter: Vec<(&str, &str)> = filter
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .unwrap_or_else(|| panic!("filter {f:?} is not label=\"value\""));
            (k, v.trim_matches('"'))
        })
        .collect();
    iotflow_metrics::Exposition::parse(text)
        .sum(name, &filter)
        .unwrap_or(0.0)
}

/// Waits for a child to exit; returns (success, stderr).
pub fn finish(mut child: Child, timeout: Duration) -> (bool, String) {
    use std::io::Read;
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "job did not exit within {timeout:?}; stderr:\n{}",
                reader.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), reader.join().unwrap())
}

/// Runs `promtool check metrics` on an exposition; fails the test with promtool's words.
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: it comes with Debian's prometheus package (bash deploy/local/install.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn clickhouse_url() -> String {
    std::env::var("IOTFLOW_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

impl Fixture {
    /// Creates this fixture's ClickHouse database (same name as the MySQL one) and returns the
    /// job environment that turns the ClickHouse sink on.
    pub fn clickhouse_env(&self) -> Vec<(String, String)> {
        let db = self.db.clone();
        runtime().block_on(async move {
            clickhouse::Client::default()
                .with_url(clickhouse_url())
                .with_validation(false)
                .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
                .execute()
                .await
                .unwrap_or_else(|e| panic!("cannot reach ClickHouse at {} ({e}); start the local stack: bash deploy/local/start.sh", clickhouse_url()));
        });
        [
            ("IOTFLOW__CLICKHOUSE__ENABLED", "true".to_string()),
            ("IOTFLOW__CLICKHOUSE__URL", clickhouse_url()),
            ("IOTFLOW__CLICKHOUSE__DATABASE", self.db.clone()),
            // Small batches so a crash catches rows in flight.
            ("IOTFLOW__CLICKHOUSE__BATCH__MAX_ROWS", "5000".to_string()),
            (
                "IOTFLOW__CLICKHOUSE__BATCH__MAX_DELAY_MS",
                "200".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs a ClickHouse query in this fixture's database, rows as tab-separated text.
    pub fn clickhouse_tsv(&self, sql: &str) -> Vec<String> {
        let db = self.db.clone();
        let sql = sql.to_string();
        let body = runtime().block_on(async move {
            let client = clickhouse::Client::default()
                .with_url(clickhouse_url())
                .with_database(db)
                .with_validation(false);
            let mut cursor = client.query(&sql).fetch_bytes("TabSeparated").unwrap();
            cursor
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .to_vec()
        });
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// Scrapes a job that must still be running: fails the test with the job's exit status and
/// stderr if it has exited, or if its endpoint does not answer within 10 s.
pub fn scrape_running(port: u16, child: &mut Child) -> String {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("the job exited ({status}) while it should be running; stderr:\n{stderr}");
        }
        if let Some(t) = scrape(port) {
            return t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the job's metrics endpoint on port {port} did not answer for 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The job's environment for the Elasticsearch sink writing to the stand-in at `url` (small
/// batches, so a crash catches documents in flight).
pub fn elasticsearch_env(url: &str) -> Vec<(String, String)> {
    [
        ("IOTFLOW__ELASTICSEARCH__ENABLED", "true"),
        ("IOTFLOW__ELASTICSEARCH__URL", url),
        ("IOTFLOW__ELASTICSEARCH__BATCH__MAX_ROWS", "1000"),
        ("IOTFLOW__ELASTICSEARCH__BATCH__MAX_DELAY_MS", "200"),
        ("IOTFLOW__ELASTICSEARCH__RETRY__MAX_BACKOFF_MS", "500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The text of a JSON number field `"name":<number>` in a document's source line, exactly as
/// sent (the stand-in keeps the line; parsing it to `serde_json::Value` would go through f64).
pub fn json_number<'a>(source: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = source
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {source}"))
        + key.len();
    let rest = &source[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    &rest[..end]
}

/// Per device: count and exact sums of metric, latitude and longitude.
pub type PerDevice = BTreeMap<
    String,
    (
        u64,
        iotflow_model::Decimal,
        iotflow_model::Decimal,
        iotflow_model::Decimal,
    ),
>;

/// Documents in the stand-in per device: (count, exact sums of metric, latitude, longitude),
/// and how many carry a company. Also checks each document sits in the daily index of its
/// `event_time` and that its `_id` names its source coordinates.
pub fn stand_in_per_device(es: &iotflow_es_stand_in::StandIn, prefix: &str) -> (PerDevice, u64) {
    use std::str::FromStr;
    let d = |s: &str| iotflow_model::Decimal::from_str(s).unwrap();
    let mut out = PerDevice::new();
    let mut with_company = 0;
    for ((index, id), (source, doc)) in &es.state().docs {
        let day = &doc["event_time"].as_str().unwrap()[..10];
        assert_eq!(
            *index,
            format!("{prefix}-{}", day.replace('-', ".")),
            "document {id} in the wrong daily index"
        );
        assert!(
            id.starts_with(&format!("{}-{}-", doc["src_partition"], doc["src_offset"])),
            "id {id} names its source coordinates"
        );
        let e = out
            .entry(doc["pboxid"].as_str().unwrap().to_string())
            .or_default();
        e.0 += 1;
        e.1 += d(json_number(source, "metric"));
        e.2 += d(json_number(source, "lat"));
        e.3 += d(json_number(source, "lon"));
        with_company += u64::from(doc.get("company").is_some_and(|c| !c.is_null()));
    }
    (out, with_company)
}

/// A script of `deploy/local/`.
pub fn script(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/local")
        .join(name)
}

/// Runs a `deploy/local/` script; fails the test with its stderr if it fails.
pub fn run_script(name: &str, args: &[&str]) {
    let out = Command::new("bash")
        .arg(script(name))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the local servers again when dropped, whatever happened: for tests that stop one.
pub struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("start.sh")).output();
    }
}

/// `iotflow publish-devices` for the fixture's database and topics, polling every 100 ms,
/// metrics on `port`; stderr goes to `stderr`.
pub fn publisher(f: &Fixture, port: u16, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iotflow"))
        .arg("publish-devices")
        .env("IOTFLOW__KAFKA__BROKERS", brokers())
        .env("IOTFLOW__KAFKA__BROADCAST_TOPIC", &f.broadcast)
        .env("IOTFLOW__MYSQL__URL", &f.db_url)
        .env("IOTFLOW__PUBLISHER__POLL_INTERVAL_MS", "100")
        .env(
            "IOTFLOW__PUBLISHER__METRICS_LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Creates `device_info` and its outbox in the fixture's database and fills it with `devices`.
pub fn seed_device_info(f: &Fixture, devices: &[iotflow_model::DeviceInfo]) {
    runtime().block_on(async {
        let pool = iotflow_mysql::connect(&f.db_url, Duration::from_secs(10))
            .await
            .unwrap();
        iotflow_publisher::create_schema(&pool).await.unwrap();
        iotflow_publisher::upsert_devices(&pool, devices)
            .await
            .unwrap();
        pool.disconnect().await.unwrap();
    });
}

/// Sends SIGTERM to a child this test started (the job's clean stop: it drains and commits).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
}

/// Crashes the local ClickHouse server (SIGKILL, by the pid its start script recorded): the
/// outage tests' way of taking it down (see `outage.rs` for why not a clean stop). Bring it
/// back with `run_script("start.sh", &[])`.
pub fn kill_clickhouse() {
    let dir = std::env::var("IOTFLOW_CLICKHOUSE_DIR")
        .unwrap_or_else(|_| format!("{}/../../.local/clickhouse", env!("CARGO_MANIFEST_DIR")));
    let pid = std::fs::read_to_string(format!("{dir}/clickhouse.pid"))
        .unwrap_or_else(|e| panic!("{dir}/clickhouse.pid: {e}"));
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {pid}");
}

/// The offsets the broker holds for the fixture's consumer group (next offset to read, 0 where
/// nothing was committed), read the way the job reads them at start: the store of truth for
/// "how far the job got", independent of the job's own metrics.
pub struct CommittedOffsets {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl CommittedOffsets {
    pub fn new(f: &Fixture, partitions: i32) -> CommittedOffsets {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &f.group)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        CommittedOffsets {
            consumer,
            topic: f.topic.clone(),
            partitions,
        }
    }

    /// Per partition, or `None` if the broker did not answer within 5 s.
    pub fn get(&self) -> Option<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in 0..self.partitions {
            tpl.add_partition(&self.topic, p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .ok()?;
        Some(
            got.elements()
                .iter()
                .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(0).max(0)))
                .collect(),
        )
    }

    /// Sum over the partitions (= records behind the commit, offsets starting at 0).
    pub fn total(&self) -> Option<i64> {
        self.get().map(|m| m.values().sum())
    }
}

/// `iot_data` in MySQL per device: count and exact sums of metric, latitude and longitude.
pub fn mysql_per_device(f: &Fixture) -> PerDevice {
    use std::str::FromStr;
    let rows: Vec<(String, u64, String, String, String)> = f.query(
        "SELECT pboxid, COUNT(*), CAST(SUM(metric) AS CHAR), CAST(SUM(latitude) AS CHAR), CAST(SUM(longitude) AS CHAR) \
         FROM iot_data GROUP BY pboxid",
    );
    let d = |s: &str| iotflow_model::Decimal::from_str(s).unwrap().normalize();
    rows.into_iter()
        .map(|(id, n, m, la, lo)| (id, (n, d(&m), d(&la), d(&lo))))
        .collect()
}

/// `iot_data` in ClickHouse read `FINAL` per device: count and exact sums.
pub fn clickhouse_per_device(f: &Fixture) -> PerDevice {
    use std::str::FromStr;
    let d = |s: &str| iotflow_model::Decimal::from_str(s).unwrap().normalize();
    f.clickhouse_tsv(
        "SELECT pboxid, count(), toString(sum(metric)), toString(sum(latitude)), toString(sum(longitude)) \
         FROM iot_data FINAL GROUP BY pboxid",
    )
    .iter()
    .map(|line| {
        let v: Vec<&str> = line.split('\t').collect();
        (v[0].to_string(), (v[1].parse().unwrap(), d(v[2]), d(v[3]), d(v[4])))
    })
    .collect()
}

/// Per device (count, exact sums) of the valid readings `options` generates: what `iot_data`
/// must hold.
pub fn expected_per_device(options: &iotflow_gen::GenOptions) -> PerDevice {
    let mut e = PerDevice::new();
    for g in iotflow_gen::Generator::new(options.clone()) {
        if let Some(x) = g.expected {
            let d = e.entry(x.pboxid).or_default();
            d.0 += 1;
            d.1 += x.metric;
            d.2 += x.latitude;
            d.3 += x.longitude;
        }
    }
    for v in e.values_mut() {
        v.1 = v.1.normalize();
        v.2 = v.2.normalize();
        v.3 = v.3.normalize();
    }
    e
}

/// The local Mosquitto, `(host, port)`, from `IOTFLOW_TEST_MQTT` (default 127.0.0.1:1883).
pub fn mqtt() -> (String, u16) {
    let addr = std::env::var("IOTFLOW_TEST_MQTT").unwrap_or_else(|_| "127.0.0.1:1883".into());
    let (h, p) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("IOTFLOW_TEST_MQTT `{addr}` is not host:port"));
    (h.to_string(), p.parse().expect("a port"))
}

/// One record as [`read_topic`] gives it: key, payload, headers.
pub type Record = (Option<String>, Vec<u8>, BTreeMap<String, String>);

/// Every record of `topic` from the start, read until `enough` says so, or for `timeout`.
pub fn read_topic(
    topic: &str,
    timeout: Duration,
    mut enough: impl FnMut(&[Record]) -> bool,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set(
            "group.id",
            format!("read-{topic}-{}", rand::random::<u32>()),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    // Assigned, not subscribed: no consumer-group join (which takes the local broker ~20 s).
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .expect("topic metadata");
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment
            .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    let start = Instant::now();
    while start.elapsed() < timeout && !enough(&out) {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().unwrap_or_default().to_vec(),
                headers,
            ));
        }
    }
    out
}
