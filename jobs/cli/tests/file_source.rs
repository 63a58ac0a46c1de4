//! `iotflow run --input`: archives of JSON lines (plain, gzip, directories) land in MySQL exactly
//! once through the same parse, sinks and dead-letter topic as Kafka; a re-run adds nothing; a
//! truncated gzip fails the job naming the file and offset, and keeps the lines before it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use common::*;
use flate2::write::GzEncoder;
use flate2::Compression;
use iotflow_file::partition_of;
use iotflow_model::Decimal;

/// Reading `i` of file `file`: a distinct device, second and exact 8-place metric.
fn reading(file: usize, i: usize) -> String {
    format!(
        r#"{{"event_time":"2025-04-10 08:{:02}:{:02}.250","metric":{}.{:08},"pboxid":"dev-{file}-{}","latitude":31.23,"longitude":121.47}}"#,
        i / 60 % 60,
        i % 60,
        i * 1000 + file,
        (i * 7919 + file) % 100_000_000,
        i % 7
    )
}

fn metric(file: usize, i: usize) -> Decimal {
    Decimal::from_str(&format!(
        "{}.{:08}",
        i * 1000 + file,
        (i * 7919 + file) % 100_000_000
    ))
    .unwrap()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "iotflow-file-test-{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_files(f: &Fixture, workers: usize, inputs: &[&Path]) -> (bool, String) {
    let mut job = f.job(workers, free_port());
    for i in inputs {
        job.arg("--input").arg(i);
    }
    finish(job.spawn().unwrap(), Duration::from_secs(180))
}

#[test]
fn plain_gzip_and_directory_inputs_land_exactly_once_and_a_rerun_adds_nothing() {
    let f = Fixture::new("file-source", 1);
    let dir = temp_dir("archive");
    std::fs::create_dir_all(dir.join("2025/04")).unwrap();
    // File 0: plain, in the directory, with one bad line (line 10) and a blank line.
    let mut text0 = String::new();
    let mut bad_offset = 0;
    for i in 0..40 {
        if i == 10 {
            bad_offset = text0.len();
            text0.push_str("{\"event_time\":\"2025-04-10 08:00:00\",\"metric\":\"lots\"}\n\n");
        }
        text0.push_str(&reading(0, i));
        text0.push('\n');
    }
    std::fs::write(dir.join("a.jsonl"), &text0).unwrap();
    // File 1: gzip, named without `.gz`, in a subdirectory; no newline after the last line.
    let text1: String = (0..60)
        .map(|i| reading(1, i))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("2025/04/10.jsonl"), gzip(&text1)).unwrap();
    // File 2: gzip, given directly, outside the directory.
    let single = temp_dir("single").join("extra.jsonl.gz");
    let text2: String = (0..25).map(|i| reading(2, i) + "\n").collect();
    std::fs::write(&single, gzip(&text2)).unwrap();
    let valid = 40 + 60 + 25;

    let (ok, stderr) = run_files(&f, 2, &[&dir, &single]);
    assert!(ok, "job failed:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("input read"), "{stderr}");
    assert_eq!(f.row_count(), valid);

    // Per file: count, exact sum of the metrics, positions in the source columns.
    let files = [
        ("a.jsonl", 0usize, 40usize),
        ("2025/04/10.jsonl", 1, 60),
        ("extra.jsonl.gz", 2, 25),
    ];
    for (name, file, n) in files {
        let rows: Vec<(u64, String, Option<String>)> = f.query(&format!(
            "SELECT COUNT(*), CAST(SUM(metric) AS CHAR), MAX(kafka_ts) FROM iot_data WHERE src_partition = {}",
            partition_of(name)
        ));
        let want: Decimal = (0..n).map(|i| metric(file, i)).sum();
        assert_eq!(rows[0].0, n as u64, "{name}");
        assert_eq!(
            Decimal::from_str(&rows[0].1).unwrap().normalize(),
            want.normalize(),
            "{name}"
        );
        assert_eq!(rows[0].2, None, "no broker timestamp for file input");
    }
    // Spot check: line 11 of a.jsonl sits after the bad line and the blank one.
    let offset = bad_offset + text0[bad_offset..].find("\n\n").unwrap() + 2;
    let rows: Vec<(String, String)> = f.query(&format!(
        "SELECT pboxid, CAST(metric AS CHAR) FROM iot_data WHERE src_partition = {} AND src_offset = {offset}",
        partition_of("a.jsonl")
    ));
    assert_eq!(
        rows,
        [("dev-0-3".to_string(), format!("{}", metric(0, 10)))],
        "offset {offset}"
    );
    let rows: Vec<String> = f.query(&format!(
        "SELECT CAST(metric AS CHAR) FROM iot_data WHERE src_partition = {} AND src_offset = 0",
        partition_of("2025/04/10.jsonl")
    ));
    assert_eq!(rows, ["1.00000001"]);

    let letters = f.dead_letters(1);
    assert_eq!(letters.len(), 1, "{letters:?}");
    let (key, payload, headers) = &letters[0];
    let p = partition_of("a.jsonl");
    assert_eq!(key, &format!("file/{p}/{bad_offset}"));
    assert!(String::from_utf8_lossy(payload).contains("lots"));
    assert_eq!(headers["iotflow.source_partition"], p.to_string());
    assert_eq!(headers["iotflow.source_offset"], bad_offset.to_string());
    assert!(
        headers["iotflow.reason"].contains(&format!("file a.jsonl offset {bad_offset}")),
        "{headers:?}"
    );

    // Again, with another worker count: nothing new in the table or the dead-letter topic.
    let (ok, stderr) = run_files(&f, 3, &[&dir, &single]);
    assert!(ok, "re-run failed:\n{stderr}");
    assert_eq!(f.row_count(), valid);
    let letters = f.dead_letters(1);
    assert_eq!(
        letters.len(),
        1,
        "the re-run wrote a dead letter twice: {letters:?}"
    );
}

#[test]
fn a_truncated_gzip_fails_naming_the_file_and_keeps_the_lines_before_it() {
    let f = Fixture::new("file-truncated", 1);
    let dir = temp_dir("truncated");
    let good: String = (0..30).map(|i| reading(0, i) + "\n").collect();
    std::fs::write(dir.join("a-good.jsonl"), &good).unwrap();
    let text: String = (0..3000).map(|i| reading(1, i) + "\n").collect();
    let bytes = gzip(&text);
    std::fs::write(dir.join("b-cut.jsonl.gz"), &bytes[..bytes.len() / 2]).unwrap();

    let (ok, stderr) = run_files(&f, 1, &[&dir]);
    assert!(!ok, "a truncated gzip must fail the job:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("b-cut.jsonl.gz at offset"))
        .unwrap_or_else(|| panic!("no error naming the file and offset:\n{stderr}"));
    let offset: i64 = line
        .split("at offset ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));

    // The good file whole; of the cut one, every whole line before the failing offset.
    let cut = partition_of("b-cut.jsonl.gz");
    let rows: Vec<(i32, u64, Option<i64>)> = f.query(&format!(
        "SELECT src_partition, COUNT(*), MAX(src_offset) FROM iot_data GROUP BY src_partition ORDER BY src_partition = {cut}"
    ));
    assert_eq!(rows[0].0, partition_of("a-good.jsonl"), "{rows:?}");
    assert_eq!(rows[0].1, 30, "{rows:?}");
    let whole_before = text[..offset as usize].lines().count() as u64;
    assert!(whole_before > 0 && whole_before < 3000, "{offset}");
    assert_eq!(
        rows.get(1).map(|r| (r.0, r.1)),
        Some((cut, whole_before)),
        "{rows:?}"
    );
}
