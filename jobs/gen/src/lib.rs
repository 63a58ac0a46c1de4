//! `iotflow gen`: a device simulator.
//!
//! Devices alternate between working (metric well above 50) and idle (below), drift around a
//! home position, and report at a steady cadence. A configurable share of records is malformed
//! in one of several realistic ways, and a share comes from devices that have no business
//! record. Everything is derived from a seed, so a test can generate the same records and know
//! exactly what must arrive where.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{Duration as ChronoDuration, NaiveDateTime, Utc};
use iotflow_model::{Decimal, DeviceInfo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    /// Number of devices with business records.
    pub devices: usize,
    /// Records to produce (0 = no limit).
    pub count: u64,
    /// Share of records that are malformed, 0..=1.
    pub malformed_share: f64,
    /// Share of valid records from devices without a business record, 0..=1.
    pub unknown_share: f64,
    /// Share of valid records whose time is RFC 3339 instead of `yyyy-MM-dd HH:mm:ss.SSS`.
    pub rfc3339_share: f64,
    /// Seed of everything random.
    pub seed: u64,
    /// Event time of the first round of readings (default: now, UTC).
    pub start: NaiveDateTime,
    /// Event-time step between two readings of one device.
    pub step: ChronoDuration,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            devices: 100,
            count: 0,
            malformed_share: 0.0,
            unknown_share: 0.0,
            rfc3339_share: 0.1,
            seed: 42,
            start: Utc::now().naive_utc(),
            step: ChronoDuration::seconds(1),
        }
    }
}

/// A valid reading as generated: what the table must contain for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Device id.
    pub pboxid: String,
    /// Event time as stored.
    pub event_time: NaiveDateTime,
    /// Metric.
    pub metric: Decimal,
    /// Latitude.
    pub latitude: Decimal,
    /// Longitude.
    pub longitude: Decimal,
    /// Whether the device has a business record.
    pub known: bool,
}

/// One generated Kafka record.
#[derive(Clone, Debug)]
pub struct Generated {
    /// Message key.
    pub key: String,
    /// Message payload.
    pub payload: Vec<u8>,
    /// `Some` for a valid reading, `None` for a malformed record.
    pub expected: Option<Expected>,
    /// For malformed records, how it is broken.
    pub defect: Option<&'static str>,
}

/// The ids of the known devices.
pub fn device_id(i: usize) -> String {
    format!("pbox-{i:06}")
}

const COMPANIES: [&str; 4] = [
    "Galaxy Heavy Industry",
    "East River Power",
    "北方机械",
    "Sunrise Logistics",
];
const SITES: [&str; 4] = [
    "Shanghai-Pudong",
    "Suzhou-SIP",
    "Wuxi-New-District",
    "Hangzhou-Binjiang",
];
const MODELS: [&str; 3] = ["PB-200", "PB-350X", "PB-500 Pro"];

/// The business records of the known devices.
pub fn devices(n: usize, seed: u64) -> Vec<DeviceInfo> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xD0D0);
    (0..n)
        .map(|i| DeviceInfo {
            pboxid: device_id(i),
            company: Some(COMPANIES[i % COMPANIES.len()].to_string()),
            site: Some(SITES[(i / 4) % SITES.len()].to_string()),
            line: Some(format!("L{}", 1 + i % 8)),
            device_name: Some(format!("Pump station {i}")),
            model: Some(MODELS[rng.random_range(0..MODELS.len())].to_string()),
            status: Some(
                if i % 50 == 49 {
                    "maintenance"
                } else {
                    "active"
                }
                .to_string(),
            ),
            work_threshold: Some(Decimal::from(50)),
            updated_at: Some("2025-04-01 00:00:00".to_string()),
        })
        .collect()
}

struct DeviceState {
    working: bool,
    metric: i64, // hundredths
    lat: i64,    // millionths
    lon: i64,
}

/// An endless (or `count`-long) deterministic stream of records.
pub struct Generator {
    options: GenOptions,
    rng: SmallRng,
    states: Vec<DeviceState>,
    ghosts: Vec<DeviceState>,
    produced: u64,
}

impl Generator {
    /// A generator for `options`.
    pub fn new(options: GenOptions) -> Self {
        let mut rng = SmallRng::seed_from_u64(options.seed);
        let state = |rng: &mut SmallRng| DeviceState {
            working: rng.random_bool(0.5),
            metric: rng.random_range(0..10_000),
            lat: rng.random_range(30_000_000..32_000_000),
            lon: rng.random_range(120_000_000..122_000_000),
        };
        let states = (0..options.devices.max(1))
            .map(|_| state(&mut rng))
            .collect();
        let ghosts = (0..(options.devices / 10).max(1))
            .map(|_| state(&mut rng))
            .collect();
        Generator {
            options,
            rng,
            states,
            ghosts,
            produced: 0,
        }
    }

    fn valid(&mut self, i: u64) -> Generated {
        let devices = self.states.len() as u64;
        let round = (i / devices) as i32;
        let event_time = self.options.start + self.options.step * round;
        let ghost = self
            .rng
            .random_bool(self.options.unknown_share.clamp(0.0, 1.0));
        let (pboxid, s) = if ghost {
            let g = self.rng.random_range(0..self.ghosts.len());
            (format!("ghost-{g:04}"), &mut self.ghosts[g])
        } else {
            let d = (i % devices) as usize;
            (device_id(d), &mut self.states[d])
        };
        // Working phases last a while; the metric wanders inside the phase's band.
        if self.rng.random_bool(0.02) {
            s.working = !s.working;
        }
        let target = if s.working { 7_500 } else { 2_000 };
        s.metric += (target - s.metric) / 8 + self.rng.random_range(-400..=400);
        s.metric = s.metric.clamp(0, 10_000);
        s.lat = (s.lat + self.rng.random_range(-50..=50)).clamp(-90_000_000, 90_000_000);
        s.lon = (s.lon + self.rng.random_range(-50..=50)).clamp(-180_000_000, 180_000_000);
        let expected = Expected {
            pboxid: pboxid.clone(),
            event_time,
            metric: Decimal::new(s.metric, 2),
            latitude: Decimal::new(s.lat, 6),
            longitude: Decimal::new(s.lon, 6),
            known: !ghost,
        };
        let time = if self
            .rng
            .random_bool(self.options.rfc3339_share.clamp(0.0, 1.0))
        {
            event_time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        } else {
            event_time.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
        };
        let payload = format!(
            r#"{{"event_time":"{time}","metric":{},"pboxid":"{pboxid}","latitude":{},"longitude":{}}}"#,
            expected.metric, expected.latitude, expected.longitude
        );
        Generated {
            key: pboxid,
            payload: payload.into_bytes(),
            expected: Some(expected),
            defect: None,
        }
    }

    fn malformed(&mut self, i: u64) -> Generated {
        let mut g = self.valid(i);
        let text = String::from_utf8(g.payload.clone()).expect("generated JSON is UTF-8");
        let (defect, payload): (&'static str, Vec<u8>) = match self.rng.random_range(0..8) {
            0 => (
                "garbage",
                (0..self.rng.random_range(1..200))
                    .map(|_| self.rng.random())
                    .collect(),
            ),
            1 => ("truncated", text.as_bytes()[..text.len() / 2].to_vec()),
            2 => (
                "missing_field",
                text.replace(r#""metric":"#, r#""metrik":"#).into_bytes(),
            ),
            3 => (
                "wrong_type",
                text.replace(r#""metric":"#, r#""metric":true,"x":"#)
                    .into_bytes(),
            ),
            4 => (
                "latitude_out_of_range",
                text.replace(r#""latitude":"#, r#""latitude":123.4,"y":"#)
                    .into_bytes(),
            ),
            5 => ("bad_event_time", {
                let start = text.find(r#""event_time":""#).expect("has event_time") + 14;
                let end = start + text[start..].find('"').expect("closing quote");
                format!("{}yesterday at noon{}", &text[..start], &text[end..]).into_bytes()
            }),
            6 => (
                "long_pboxid",
                text.replace(&g.key, &"x".repeat(80)).into_bytes(),
            ),
            _ => ("empty", Vec::new()),
        };
        g.payload = payload;
        g.expected = None;
        g.defect = Some(defect);
        g.key = format!("malformed-{i}");
        g
    }
}

impl Iterator for Generator {
    type Item = Generated;

    fn next(&mut self) -> Option<Generated> {
        if self.options.count > 0 && self.produced >= self.options.count {
            return None;
        }
        let i = self.produced;
        self.produced += 1;
        Some(
            if self
                .rng
                .random_bool(self.options.malformed_share.clamp(0.0, 1.0))
            {
                self.malformed(i)
            } else {
                self.valid(i)
            },
        )
    }
}

/// A producer suited to bulk loading.
pub fn producer(brokers: &str) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Batch for throughput; the simulator is a load generator.
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("acks", "all")
        .create()
        .with_context(|| format!("creating a Kafka producer for {brokers}"))
}

/// Sends `records` to `topic` at `rate` records/s (0 = as fast as possible); returns the count.
pub fn produce(
    brokers: &str,
    topic: &str,
    records: impl Iterator<Item = Generated>,
    rate: f64,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<u64> {
    let producer = producer(brokers)?;
    let started = Instant::now();
    let mut sent = 0u64;
    for r in records {
        if rate > 0.0 {
            let due = Duration::from_secs_f64(sent as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let mut record = BaseRecord::to(topic)
            .key(r.key.as_bytes())
            .payload(&r.payload[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(e).with_context(|| format!("producing to {topic} on {brokers}"))
                }
            }
        }
        sent += 1;
        if sent.is_multiple_of(10_000) {
            progress(sent);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("flushing to {topic} on {brokers}"))?;
    Ok(sent)
}

/// Publishes device records (keyed by `pboxid`) to the broadcast topic.
pub fn publish_devices(brokers: &str, topic: &str, devices: &[DeviceInfo]) -> anyhow::Result<()> {
    let producer = producer(brokers)?;
    for d in devices {
        let json = d.to_json();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(d.pboxid.as_bytes())
                    .payload(json.as_bytes()),
            )
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing device {} to {topic}", d.pboxid))?;
    }
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("flushing to {topic} on {brokers}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotflow_model::{parse_reading, ParseLimits, Zone};

    #[test]
    fn generated_records_parse_exactly_as_expected() {
        let options = GenOptions {
            devices: 20,
            count: 5000,
            malformed_share: 0.05,
            unknown_share: 0.1,
            start: NaiveDateTime::parse_from_str("2025-04-10 23:59:00", "%Y-%m-%d %H:%M:%S")
                .unwrap(),
            ..Default::default()
        };
        let (mut valid, mut bad, mut ghosts) = (0, 0, 0);
        for g in Generator::new(options) {
            let parsed = parse_reading(&g.payload, &Zone::Utc, &ParseLimits::default());
            match (&g.expected, parsed) {
                (Some(e), Ok(r)) => {
                    valid += 1;
                    ghosts += usize::from(!e.known);
                    assert_eq!(
                        (r.pboxid, r.event_time, r.metric, r.latitude, r.longitude),
                        (
                            e.pboxid.clone(),
                            e.event_time,
                            e.metric,
                            e.latitude,
                            e.longitude
                        )
                    );
                }
                (None, Err(_)) => bad += 1,
                (e, p) => panic!(
                    "expected {e:?}, parsed {p:?}: {:?} {}",
                    g.defect,
                    String::from_utf8_lossy(&g.payload)
                ),
            }
        }
        assert_eq!(valid + bad, 5000);
        assert!((150..350).contains(&bad), "{bad} malformed");
        assert!((300..700).contains(&ghosts), "{ghosts} unknown");
    }

    #[test]
    fn same_seed_same_records() {
        let o = GenOptions {
            count: 100,
            malformed_share: 0.1,
            ..Default::default()
        };
        let a: Vec<_> = Generator::new(o.clone()).map(|g| g.payload).collect();
        let b: Vec<_> = Generator::new(o).map(|g| g.payload).collect();
        assert_eq!(a, b);
    }
}
