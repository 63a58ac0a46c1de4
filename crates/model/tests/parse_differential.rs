//! The fast reading parser against the reference parser (a seeded oracle test): on the device
//! simulator's records and on 200 000 randomly assembled odd ones, both must give
//! identical readings (decimals compared by representation, scale and sign included) or the
//! same error, message included; and the fast path must actually take the common shape.

use iotflow_gen::{GenOptions, Generator};
use iotflow_model::{
    parse_reading, parse_reading_fast, parse_reading_reference, NaiveDateTime, ParseError,
    ParseLimits, ParsedReading, Zone,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Every field, decimals by their 16 bytes: `Decimal`'s `Eq` calls `1.0` and `1.00` equal.
fn exact(r: &ParsedReading) -> (NaiveDateTime, [u8; 16], String, [u8; 16], [u8; 16]) {
    (
        r.event_time,
        r.metric.serialize(),
        r.pboxid.clone(),
        r.latitude.serialize(),
        r.longitude.serialize(),
    )
}

/// Whether the fast path took `payload`; panics if anything differs from the reference.
fn check(payload: &[u8], zone: &Zone, limits: &ParseLimits) -> bool {
    let reference = parse_reading_reference(payload, zone, limits);
    let fast = parse_reading_fast(payload, zone, limits);
    let public = parse_reading(payload, zone, limits);
    let show = || String::from_utf8_lossy(payload).into_owned();
    if let Some(f) = &fast {
        match &reference {
            Ok(r) => assert_eq!(exact(f), exact(r), "fast path differs on {:?}", show()),
            Err(e) => panic!("fast path accepted {:?}, reference says {e}", show()),
        }
    }
    match (&public, &reference) {
        (Ok(p), Ok(r)) => assert_eq!(exact(p), exact(r), "{:?}", show()),
        (Err(p), Err(r)) => {
            assert_eq!(p, r, "{:?}", show());
            assert_eq!(p.to_string(), r.to_string(), "{:?}", show());
        }
        (p, r) => panic!("{:?}: parse_reading {p:?}, reference {r:?}", show()),
    }
    fast.is_some()
}

fn zones() -> Vec<Zone> {
    [
        "UTC",
        "+08:00",
        "-05:30",
        "Asia/Shanghai",
        "America/New_York",
    ]
    .iter()
    .map(|z| z.parse().expect("valid zone"))
    .collect()
}

#[test]
fn the_simulators_records_take_the_fast_path_with_identical_results() {
    let limits = ParseLimits::default();
    for (seed, zone) in zones().into_iter().enumerate() {
        let options = GenOptions {
            devices: 50,
            count: 20_000,
            malformed_share: 0.2,
            unknown_share: 0.1,
            rfc3339_share: 0.5,
            seed: seed as u64,
            start: NaiveDateTime::parse_from_str("2025-04-10 23:59:00", "%Y-%m-%d %H:%M:%S")
                .expect("valid time"),
            ..GenOptions::default()
        };
        let (mut valid, mut fast) = (0, 0);
        for g in Generator::new(options) {
            let took_fast = check(&g.payload, &zone, &limits);
            if g.expected.is_some() {
                valid += 1;
                fast += usize::from(took_fast);
            } else {
                assert!(
                    !took_fast,
                    "malformed record on the fast path: {:?}",
                    g.defect
                );
            }
        }
        assert!(valid > 15_000, "{valid} valid records");
        assert_eq!(
            fast, valid,
            "every valid simulated record takes the fast path"
        );
    }
}

/// Random pieces of JSON, mostly odd.
struct Odd {
    rng: SmallRng,
}

impl Odd {
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.rng.random_range(0..from.len())]
    }

    /// Mostly nothing, sometimes JSON whitespace, rarely whitespace JSON does not allow.
    fn ws(&mut self) -> &'static str {
        if self.rng.random_bool(0.85) {
            ""
        } else {
            self.pick(&[
                " ", "\t", "\n", "\r\n", "  ", " ", "\t", "\n", "\r", " \n ", "\x0c", "\u{a0}",
            ])
        }
    }

    /// A number whose integer part is mostly below `bound`, or an odd one.
    fn number(&mut self, bound: u32) -> String {
        if self.rng.random_bool(0.7) {
            let int = self.rng.random_range(0..bound + bound / 50 + 1);
            let frac = self.rng.random_range(0..1_000_000u32);
            let sign = if self.rng.random_bool(0.3) { "-" } else { "" };
            return match self.rng.random_range(0..4) {
                0 => format!("{sign}{int}"),
                1 => format!("{sign}{int}.{frac}"),
                2 => format!("{sign}{int}.{frac:06}"),
                _ => format!("{sign}{int}.{frac}0"),
            };
        }
        self.pick(&[
            "0",
            "-0",
            "-0.0",
            "0.0",
            "00",
            "01",
            "-01.5",
            "1.",
            ".5",
            "+1",
            "1e2",
            "1E2",
            "1.5e-3",
            "-2.5E+1",
            "1e999",
            "1e-999",
            "0e0",
            "90",
            "90.0",
            "90.000",
            "90.00000001",
            "-90",
            "-90.0",
            "-90.1",
            "180",
            "180.0",
            "-180.00",
            "180.0000000001",
            "-180.5",
            "89.99999999999999999",
            "179.999999999999999999",
            "9999999999999999",
            "9999999999999999.99999999",
            "9999999999999999.999999994",
            "9999999999999999.999999995",
            "-9999999999999999.999999995",
            "10000000000000000",
            "1234567890123456789",
            "12345678901234567890",
            "123456789.0123456789",
            "0.1234567890123456789",
            "0.00000000000000000000000000001",
            "123456789012345678901234567890123",
            "79228162514264337593543950335",
            "79228162514264337593543950336",
            "1.0000000000000000000000000001",
            "\"12.5\"",
            "\" 12.5 \"",
            "\"1e2\"",
            "\"lots\"",
            "\"\"",
            "\"-0\"",
            "\"12\\u002e5\"",
            "null",
            "true",
            "false",
            "[1]",
            "{}",
            "\"NaN\"",
            "NaN",
            "Infinity",
            "-",
            "--1",
            "1..2",
            "1.2.3",
            "0x10",
            "1_000",
            "١٢",
        ])
        .to_string()
    }

    fn time(&mut self) -> String {
        if self.rng.random_bool(0.5) {
            let t = self.rng.random_range(0..4_200_000_000i64);
            let t = chrono::DateTime::from_timestamp(t, 0).expect("in range");
            let ms = self.rng.random_range(0..1000);
            return if self.rng.random_bool(0.5) {
                format!("\"{}.{ms:03}\"", t.format("%Y-%m-%d %H:%M:%S"))
            } else {
                format!("\"{}.{ms:03}Z\"", t.format("%Y-%m-%dT%H:%M:%S"))
            };
        }
        if self.rng.random_bool(0.4) {
            let (y, mo, d) = (
                self.rng.random_range(1968..2102),
                self.rng.random_range(0..14),
                self.rng.random_range(0..33),
            );
            let (h, mi, s) = (
                self.rng.random_range(0..25),
                self.rng.random_range(0..61),
                self.rng.random_range(0..62),
            );
            let frac = self.pick(&[
                "",
                ".5",
                ".123",
                ".123456",
                ".123456789",
                ".1234567891",
                ".",
            ]);
            let sep = self.pick(&[" ", "T", "t", "_"]);
            let tz = self.pick(&[
                "", "", "Z", "z", "+08:00", "-05:30", "+00:00", "-00:00", "+0800", "+24:00",
                "+23:59", "-23:59", "+08", " +08:00",
            ]);
            return format!("\"{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{tz}\"");
        }
        self.pick(&[
            "\"2025-04-10 08:00:00\"",
            "\"2025-04-10 08:00:00.250\"",
            "\"2025-04-10T08:00:00.250Z\"",
            "\"2025-04-10T08:00:00+08:00\"",
            "\"2024-02-29 12:00:00\"",
            "\"2025-02-29 12:00:00\"",
            "\"2025-06-30 23:59:60\"",
            "\"2016-12-31T23:59:60Z\"",
            "\"2099-12-31T23:30:00-05:00\"",
            "\"1970-01-01T00:30:00+01:00\"",
            "\"0000-01-01 00:00:00\"",
            "\"9999-12-31 23:59:59\"",
            "\"+2025-04-10 08:00:00\"",
            "\"2025-4-10 08:00:00\"",
            "\"2025-04-10 8:00:00\"",
            "\"2025-04-10\"",
            "\"2025-04-10 08:00:00 \"",
            "\" 2025-04-10 08:00:00\"",
            "\"2025-04-10 08:00:00\\u0030\"",
            "\"2025\\u002d04-10 08:00:00\"",
            "\"2025-04-10T08:00:00\"",
            "\"2025-04-10 08:00:00Z\"",
            "\"2025-04-10 08:00:00+08:00\"",
            "\"2025-04-10T08:00:00.000000000001Z\"",
            "\"２０２５-04-10 08:00:00\"",
            "1744272000",
            "null",
            "\"\"",
        ])
        .to_string()
    }

    fn pboxid(&mut self) -> String {
        if self.rng.random_bool(0.7) {
            return format!("\"pbox-{:06}\"", self.rng.random_range(0..1_000_000));
        }
        let long = "x".repeat(self.rng.random_range(60..70));
        let wide = "设".repeat(self.rng.random_range(60..70));
        match self.pick(&["long", "wide", "list"]) {
            "long" => format!("\"{long}\""),
            "wide" => format!("\"{wide}\""),
            _ => self
                .pick(&[
                    "\"pbox-1\"",
                    "\"设备-北京-01\"",
                    "\"pbox\\u002d1\"",
                    "\"pbox\\\"1\"",
                    "\"pbox\\\\1\"",
                    "\"pbox\\u0007\"",
                    "\"pbox\\ud800\"",
                    "\"pbox\\ud83d\\ude00\"",
                    "\"pbox\u{7f}\"",
                    "\"pbox\u{85}\"",
                    "\"pbox\u{1}\"",
                    "\"pbox\t1\"",
                    "\"😀\"",
                    "\"\"",
                    "\" \"",
                    "42",
                    "null",
                    "true",
                    "[\"p\"]",
                    "\"pbox\\x\"",
                ])
                .to_string(),
        }
    }

    fn extra_value(&mut self) -> String {
        if self.rng.random_bool(0.5) {
            return self.number(1000);
        }
        self.pick(&[
            "\"x\"",
            "\"\\n\"",
            "\"\\u00e9\"",
            "\"\\ud800\"",
            "\"é\"",
            "null",
            "nul",
            "nulls",
            "true",
            "tru",
            "false",
            "[]",
            "[1,2,{\"x\":null}]",
            "{}",
            "{\"a\":[]}",
            "[1,]",
            "{\"a\"}",
            "\"\u{1}\"",
            "\"a\\\"",
            "",
        ])
        .to_string()
    }

    fn key(&mut self, field: &'static str) -> String {
        if self.rng.random_bool(0.95) {
            return format!("\"{field}\"");
        }
        match self.rng.random_range(0..4) {
            0 => format!(
                "\"{}\\u{:04x}\"",
                &field[..field.len() - 1],
                field.as_bytes()[field.len() - 1]
            ),
            1 => format!("\"{}\"", field.to_uppercase()),
            2 => format!("\"{field} \""),
            _ => field.to_string(),
        }
    }

    /// A whole payload: the five fields (each possibly missing or repeated), extra fields,
    /// in random order with random whitespace, sometimes damaged afterwards.
    fn payload(&mut self) -> Vec<u8> {
        let mut members: Vec<String> = Vec::new();
        for field in ["event_time", "metric", "pboxid", "latitude", "longitude"] {
            let copies = match self.rng.random_range(0..40) {
                0 => 0,
                1 => 2,
                _ => 1,
            };
            for _ in 0..copies {
                let value = match field {
                    "event_time" => self.time(),
                    "pboxid" => self.pboxid(),
                    "metric" => self.number(10_000),
                    "latitude" => self.number(90),
                    _ => self.number(180),
                };
                let key = self.key(field);
                let (a, b, c, d) = (self.ws(), self.ws(), self.ws(), self.ws());
                members.push(format!("{a}{key}{b}:{c}{value}{d}"));
            }
        }
        for _ in 0..self.rng.random_range(0..3) {
            let key = self.pick(&[
                "\"extra\"",
                "\"x\"",
                "\"\"",
                "\"é\"",
                "\"extra\"",
                "\"a\\tb\"",
            ]);
            let value = self.extra_value();
            members.push(format!("{key}:{}{value}", self.ws()));
        }
        for i in (1..members.len()).rev() {
            let j = self.rng.random_range(0..=i);
            members.swap(i, j);
        }
        let sep = if self.rng.random_bool(0.02) {
            ",,"
        } else {
            ","
        };
        let mut text = format!("{}{{{}}}{}", self.ws(), members.join(sep), self.ws());
        if self.rng.random_bool(0.01) {
            let close = text.rfind('}').expect("closing brace");
            text.insert(close, ',');
        }
        let mut bytes = text.into_bytes();
        match self.rng.random_range(0..50) {
            0 => bytes.truncate(self.rng.random_range(0..bytes.len())),
            1 => {
                let i = self.rng.random_range(0..bytes.len());
                bytes[i] = self.rng.random();
            }
            2 => bytes.extend_from_slice(self.pick(&["x", "{}", " \n", "\0", ","]).as_bytes()),
            3 => bytes.insert(0, b'['),
            _ => {}
        }
        bytes
    }
}

#[test]
fn odd_inputs_give_the_same_results_and_errors() {
    let mut odd = Odd {
        rng: SmallRng::seed_from_u64(11),
    };
    let zones = zones();
    let limits = [
        ParseLimits::default(),
        ParseLimits {
            max_message_bytes: 120,
            min_year: 2000,
            max_year: 2030,
            ..ParseLimits::default()
        },
    ];
    let (mut fast, mut ok) = (0, 0);
    const CASES: usize = 200_000;
    for i in 0..CASES {
        let payload = odd.payload();
        let zone = &zones[i % zones.len()];
        let limits = &limits[(i / zones.len()) % limits.len()];
        fast += usize::from(check(&payload, zone, limits));
        ok += usize::from(parse_reading_reference(&payload, zone, limits).is_ok());
    }
    // Both sides of the comparison are exercised: plenty of readings pass, plenty fail, and
    // most of those that pass take the fast path.
    eprintln!("{ok} of {CASES} parsed, {fast} on the fast path");
    assert!(ok > CASES / 50, "{ok} of {CASES} parsed");
    assert!(ok < CASES / 2, "{ok} of {CASES} parsed");
    assert!(fast > ok / 3, "{fast} of {ok} on the fast path");
}

#[test]
fn hand_made_cases_agree() {
    let zones = zones();
    let limits = ParseLimits::default();
    let good = r#"{"event_time":"2025-04-10 08:00:00","metric":51.5,"pboxid":"pbox-1","latitude":31.2304,"longitude":121.4737}"#;
    let mut cases: Vec<Vec<u8>> = vec![
        good.into(),
        format!(" \t\r\n{good}\n ").into(),
        good.replace(",\"", " ,\n\"")
            .replace("\":", "\" :\t")
            .into(),
        good.replace("51.5", "51.50").into(),
        good.replace("51.5", "-0").into(),
        good.replace("51.5", "-0.000").into(),
        good.replace("51.5", "0.0").into(),
        good.replace("\"metric\"", "\"metr\\u0069c\"").into(),
        good.replace("{", "{\"metric\":1,").into(),
        good.replace("{", "{\"x\":1,\"x\":2,").into(),
        good.replace("{", "\u{feff}{").into(),
        good.replace("{", "\x0c{").into(),
        good.replace("}", "}\x0c").into(),
        good.replace("pbox-1", "pbox\u{7f}").into(),
        good.replace("pbox-1", "设备-北京-01").into(),
        good.replace("08:00:00", "08:00:00.1234567891").into(),
        good.replace("08:00:00", "08:00:60").into(),
        Vec::new(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        b"null".to_vec(),
    ];
    let mut invalid_utf8 = good.as_bytes().to_vec();
    let at = good.find("pbox-1").unwrap() + 4;
    invalid_utf8[at] = 0xff;
    cases.push(invalid_utf8);
    let mut overlong = good.as_bytes().to_vec();
    overlong[at] = 0xc0;
    overlong[at + 1] = 0xad;
    cases.push(overlong);
    for cut in 0..good.len() {
        cases.push(good.as_bytes()[..cut].to_vec());
    }
    let mut took_fast = 0;
    for case in &cases {
        for zone in &zones {
            took_fast += usize::from(check(case, zone, &limits));
        }
    }
    // The first four cases are valid, common-shape readings.
    assert!(took_fast >= 4 * zones.len(), "{took_fast}");
    let e = parse_reading(
        good.replace("{", "{\"metric\":1,").as_bytes(),
        &Zone::Utc,
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, ParseError::Json(_)), "{e}");
}
