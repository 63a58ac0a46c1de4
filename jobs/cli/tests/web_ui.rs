//! The built-in web UI in headless Chromium (Debian `chromium`, installed by
//! `deploy/local/install.sh`), against the running job while the simulator sends readings: the
//! page loads with no script error, shows the job graph with live rates, lag, sink health,
//! recent dead-letter reasons, today's live work time and the alarms (active and recent), and
//! its numbers change between two loads. A screenshot is left at `target/ui/iotflow-ui.png`.
//! The MQTT bridge's page shows the bridge.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use iotflow_gen::{devices, produce, publish_devices, GenOptions, Generator};

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c;
        }
    }
    panic!("chromium not found: run `bash deploy/local/install.sh` (installs Debian's chromium)");
}

/// The page after `budget_ms` of (virtual) time, as Chromium rendered it; and its stderr.
fn render(url: &str, budget_ms: u32, screenshot: Option<&PathBuf>) -> (String, String) {
    render_sized(url, budget_ms, screenshot, (1400, 1100))
}

/// [`render`] in a window of `size` pixels.
fn render_sized(
    url: &str,
    budget_ms: u32,
    screenshot: Option<&PathBuf>,
    size: (u32, u32),
) -> (String, String) {
    let profile = std::env::temp_dir().join(format!("iotflow-ui-{}", rand::random::<u32>()));
    let mut c = Command::new(chromium());
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--virtual-time-budget={budget_ms}"),
    ]);
    c.arg(format!("--window-size={},{}", size.0, size.1));
    match screenshot {
        Some(path) => c.arg(format!("--screenshot={}", path.display())),
        None => c.arg("--dump-dom"),
    };
    let out = c.arg(url).output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The rate the job graph shows for `node`, records/s.
fn node_rate(dom: &str, node: &str) -> f64 {
    let at = dom
        .find(&format!("data-node=\"{node}\""))
        .unwrap_or_else(|| panic!("no graph node {node}"));
    let rate = at + dom[at..].find("class=\"rate\"").expect("a rate");
    let open = rate + dom[rate..].find('>').unwrap() + 1;
    let text = &dom[open..open + dom[open..].find("/s<").expect("a rate in /s")];
    let (number, scale) = match text.strip_suffix('k') {
        Some(n) => (n, 1e3),
        None => match text.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (text, 1.0),
        },
    };
    number
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("rate `{text}` of {node}"))
        * scale
}

/// The text of the element with `id`.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let open = start + dom[start..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    &dom[open..close]
}

#[test]
fn the_web_ui_shows_live_numbers_without_errors() {
    let f = Fixture::new("web-ui", 2);
    publish_devices(&brokers(), &f.broadcast, &devices(30, 3)).unwrap();
    let options = GenOptions {
        devices: 30,
        count: 60_000,
        malformed_share: 0.02,
        seed: 3,
        ..Default::default()
    };
    let (b, topic) = (brokers(), f.topic.clone());
    let producer =
        std::thread::spawn(move || produce(&b, &topic, Generator::new(options), 3_000.0, |_| {}));
    let port = free_port();
    let alarms = format!("al-{}", f.topic);
    create_topic(&alarms, 1);
    let mut job = f
        .job(2, port)
        .env("IOTFLOW__ALARMS__ENABLED", "true")
        .env("IOTFLOW__ALARMS__TOPIC", &alarms)
        // The simulator's metric wanders over 0..100: this rule raises and clears all the time.
        .env(
            "IOTFLOW__ALARMS__RULES",
            r#"[{id = "hot", when = "above", value = "60", hysteresis = "10", severity = "critical"}]"#,
        )
        .spawn()
        .unwrap();
    let label = format!("job_name=\"{}\"", f.name);
    wait_for(
        "rows, dead letters and alarms",
        Duration::from_secs(60),
        || {
            let t = scrape_running(port, &mut job);
            (metric_sum(&t, "iotflow_sink_rows_written_total", &[&label]) > 0.0
                && metric_sum(&t, "iotflow_dlq_records_total", &[&label]) > 0.0
                && metric_sum(
                    &t,
                    "iotflow_alarm_events_total",
                    &[&label, "kind=\"cleared\""],
                ) > 0.0)
                .then_some(())
        },
    );
    let url = format!("http://127.0.0.1:{port}/");

    // The graph's rates agree with the job's counters over the same seconds (the old page
    // took its rates from the browser's clock: under headless Chromium's virtual time it
    // showed 127/s for 3 000/s). While the page loads, the test scrapes the counter every
    // 50 ms with the time of each scrape; the page says which seconds its rate covers
    // (`data-from-ms`, `data-to-ms` of the graph, the server's clock: this machine's), and the
    // reference is the counter's increase between the scrapes nearest to them.
    let scrapes = {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let name = label.clone();
        let scraper = std::thread::spawn(move || {
            let mut seen: Vec<(i64, f64)> = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(t) = scrape(port) {
                    let at = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis() as i64;
                    let v = metric_sum(
                        &t,
                        "iotflow_kafka_messages_received_total",
                        &[&name, "operator=\"kafka-source\""],
                    );
                    seen.push((at, v));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        // Six seconds of scrapes before the page loads: its 5 s window lies inside them.
        let scraping = std::time::Instant::now();
        wait_for("scrapes before the page", Duration::from_secs(30), || {
            (scraping.elapsed() >= Duration::from_secs(6)).then_some(())
        });
        let page = render(&url, 4000, None);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (page, scraper.join().unwrap())
    };
    let ((first, stderr), seen) = scrapes;
    let window = |attr: &str| -> i64 {
        let at = first
            .find(&format!("{attr}=\""))
            .unwrap_or_else(|| panic!("no {attr}"))
            + attr.len()
            + 2;
        first[at..at + first[at..].find('"').unwrap()]
            .parse()
            .unwrap()
    };
    let (from, to) = (window("data-from-ms"), window("data-to-ms"));
    let nearest = |t: i64| -> (i64, f64) {
        *seen
            .iter()
            .min_by_key(|(at, _)| (at - t).abs())
            .expect("scrapes")
    };
    let (a, b) = (nearest(from), nearest(to));
    assert!(
        (a.0 - from).abs() < 300 && (b.0 - to).abs() < 300,
        "scrapes near the page's window {from}..{to}: {a:?} {b:?}"
    );
    let reference = (b.1 - a.1) / ((b.0 - a.0) as f64 / 1000.0);
    let shown = node_rate(&first, "kafka-source");
    assert!(
        (shown / reference - 1.0).abs() < 0.05,
        "the graph shows kafka-source {shown}/s over {from}..{to}; the counters say {reference:.1}/s"
    );
    // Parse counts every message the source read, in the same window.
    let parse = node_rate(&first, "parse");
    assert!(
        (parse / shown - 1.0).abs() < 0.05,
        "parse {parse}/s against kafka-source {shown}/s"
    );
    assert!(
        first.contains("data-series=\"read\""),
        "the throughput chart"
    );
    assert!(
        first.contains("data-series=\"mysql p99\""),
        "the latency chart"
    );

    assert_eq!(text_of(&first, "errors"), "", "page errors shown");
    assert!(!stderr.contains("Uncaught"), "console errors:\n{stderr}");
    let updates: u32 = {
        let at = first.find("data-updates=\"").expect("data-updates") + 14;
        first[at..first[at..].find('"').unwrap() + at]
            .parse()
            .unwrap()
    };
    assert!(updates >= 2, "the page refreshed itself: {updates} updates");
    assert_eq!(text_of(&first, "job"), f.name);
    for node in [
        "kafka-source",
        "parse",
        "enrich",
        "mysql",
        "dead-letter-sink",
    ] {
        assert!(
            first.contains(&format!("data-node=\"{node}\"")),
            "graph node {node}"
        );
    }
    assert!(first.contains("class=\"rate\""), "rates in the graph");
    let lag_rows = text_of(&first, "lag");
    let _ = lag_rows;
    assert!(
        first.matches("<td>kafka-source</td>").count() >= 2,
        "a lag row per partition"
    );
    assert!(first.contains("<td>mysql</td>"), "sink health rows");
    assert!(first.contains(">OK<"), "the sink is healthy");
    assert!(
        [
            "invalid_json",
            "missing_field",
            "wrong_type",
            "bad_event_time",
            "empty",
            "latitude",
            "garbage",
            "pboxid"
        ]
        .iter()
        .any(|r| first.contains(r)),
        "recent dead-letter reasons shown"
    );
    assert!(
        text_of(&first, "wtday").contains("devices"),
        "live work time shown"
    );
    assert!(
        text_of(&first, "alarmstate").contains("active"),
        "the alarm summary: {}",
        text_of(&first, "alarmstate")
    );
    assert!(
        first.contains("<td>hot</td>") && first.contains(">raised<") && first.contains(">cleared<"),
        "recent alarm events shown"
    );
    let total_first = text_of(&first, "total").to_string();

    // Numbers move while the simulator runs.
    let moved = wait_for(
        "the page's numbers to change",
        Duration::from_secs(30),
        || {
            let (again, _) = render(&url, 2500, None);
            let total = text_of(&again, "total").to_string();
            (total != total_first).then_some(total)
        },
    );
    assert_ne!(moved, total_first);

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("iotflow-ui.png");
    let _ = std::fs::remove_file(&shot);
    render(&url, 4000, Some(&shot));
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot at {} ({size} bytes)",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());

    job.kill().unwrap();
    job.wait().unwrap();
    let _ = producer.join();
}

#[test]
fn the_mqtt_bridge_page_shows_the_bridge() {
    let (host, mqtt_port) = mqtt();
    let f = Fixture::new("web-ui-mqtt", 1);
    let port = free_port();
    let client_id = format!("ui-{}", f.topic);
    let mut bridge = Reaped::new(
        Command::new(env!("CARGO_BIN_EXE_iotflow"))
            .arg("mqtt-bridge")
            .env("IOTFLOW__KAFKA__BROKERS", brokers())
            .env("IOTFLOW__KAFKA__TOPIC", &f.topic)
            .env("IOTFLOW__MQTT__HOST", host)
            .env("IOTFLOW__MQTT__PORT", mqtt_port.to_string())
            .env("IOTFLOW__MQTT__CLIENT_ID", &client_id)
            .env("IOTFLOW__MQTT__TOPICS", format!("[\"{client_id}/+\"]"))
            .env(
                "IOTFLOW__MQTT__STATE_DIR",
                std::env::temp_dir().join(format!("iotflow-test-{client_id}")),
            )
            .env("IOTFLOW__MQTT__METRICS_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the bridge's subscription", Duration::from_secs(60), || {
        let t = scrape_running(port, &mut bridge);
        (metric_sum(&t, "iotflow_mqtt_subscribed", &[]) == 1.0).then_some(())
    });
    let (page, stderr) = render(&format!("http://127.0.0.1:{port}/"), 3000, None);
    assert_eq!(text_of(&page, "errors"), "", "page errors shown");
    assert!(!stderr.contains("Uncaught"), "console errors:\n{stderr}");
    assert!(
        !page.contains("id=\"mqttsection\" hidden"),
        "the MQTT section is shown on the bridge's page"
    );
    assert!(page.contains("class=\"ok\">yes<"), "connected");
    assert_eq!(text_of(&page, "job"), "mqtt-bridge");
}

/// Pixels of a screenshot by what they show: heat-map tiles (orange to red), the track
/// (blue), geofence edges (green); each as (count, mean x) in the picture.
fn pixel_classes(png: &std::path::Path) -> BTreeMap<&'static str, (u64, f64)> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let mut out: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
    for y in 0..info.height as usize {
        for x in 0..info.width as usize {
            let i = (y * info.width as usize + x) * channels;
            let (r, g, b) = (buf[i] as i32, buf[i + 1] as i32, buf[i + 2] as i32);
            let class = if r >= 210 && (45..=215).contains(&g) && b <= 160 && r - g >= 35 {
                "tile"
            } else if b >= 200 && r <= 60 && (90..=140).contains(&g) {
                "track"
            } else if (100..=130).contains(&g) && r <= 40 && b <= 70 {
                "fence"
            } else {
                continue;
            };
            let e = out.entry(class).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += x as f64;
        }
    }
    for v in out.values_mut() {
        v.1 /= v.0 as f64;
    }
    out
}

#[test]
fn the_geo_views_draw_the_heat_map_a_track_and_the_geofences() {
    let f = Fixture::new("web-ui-geo", 2);
    publish_devices(&brokers(), &f.broadcast, &devices(20, 9)).unwrap();
    let options = GenOptions {
        devices: 20,
        count: 6_000,
        seed: 9,
        start: iotflow_model::NaiveDateTime::parse_from_str(
            "2025-04-10 08:00:00",
            "%Y-%m-%d %H:%M:%S",
        )
        .unwrap(),
        ..Default::default()
    };
    produce(&brokers(), &f.topic, Generator::new(options), 0.0, |_| {}).unwrap();
    let port = free_port();
    let alarms = format!("al-{}", f.topic);
    create_topic(&alarms, 1);
    let mut job = Reaped::new(
        f.job(2, port)
            .env("IOTFLOW__ROLLUPS__ENABLED", "true")
            .env("IOTFLOW__ROLLUPS__GEOHASH_PRECISION", "4")
            .env("IOTFLOW__ALARMS__ENABLED", "true")
            .env("IOTFLOW__ALARMS__TOPIC", &alarms)
            // The simulator's devices start in 30..32 N, 120..122 E: a fence over a quarter.
            .env(
                "IOTFLOW__ALARMS__RULES",
                r#"[{id = "depot", when = "in_area", area = [[[120.0, 30.0], [121.0, 30.0], [121.0, 31.0], [120.0, 31.0]], [[120.4, 30.4], [120.6, 30.4], [120.6, 30.6], [120.4, 30.6]]]}]"#,
            )
            .spawn()
            .unwrap(),
    );
    wait_for("every reading rolled up", Duration::from_secs(90), || {
        if let Some(status) = job.try_wait().unwrap() {
            panic!("the job exited ({status})");
        }
        let exists: Vec<String> = f.query(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'iot_rollup_day'",
        );
        if exists.is_empty() {
            return None;
        }
        let counted: Vec<Option<u64>> =
            f.query("SELECT CAST(SUM(readings) AS UNSIGNED) FROM iot_rollup_day");
        (counted.first().copied().flatten() == Some(6_000)).then_some(())
    });
    let json = |path: &str| -> serde_json::Value {
        let (_, body) = http_get(port, path, Duration::from_secs(10)).unwrap();
        serde_json::from_str(&body).unwrap()
    };
    let tiles = json("/api/heatmap")["tiles"].as_array().unwrap().len();
    let tracks = json("/api/tracks");
    let device = tracks["tracks"][0]["device"].as_str().unwrap().to_string();
    let path = json(&format!("/api/track?device={device}"))["path"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        tiles > 3 && path == 300,
        "{tiles} tiles, a path of {path} points"
    );

    let url = format!("http://127.0.0.1:{port}/");
    let (dom, stderr) = render(&url, 6000, None);
    assert_eq!(text_of(&dom, "errors"), "", "page errors shown");
    assert!(!stderr.contains("Uncaught"), "console errors:\n{stderr}");
    assert!(
        !dom.contains("id=\"geosection\" hidden"),
        "the geo section is shown"
    );
    let svg = |id: &str| -> &str {
        let start = dom
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("no svg #{id}"));
        &dom[start..start + dom[start..].find("</svg>").unwrap()]
    };
    let (heat, track) = (svg("heatmap"), svg("track"));
    assert!(
        heat.contains(&format!("data-tiles=\"{tiles}\"")),
        "every tile drawn"
    );
    assert_eq!(heat.matches("<rect class=\"tile\"").count(), tiles);
    assert!(
        track.contains(&format!("data-points=\"{path}\"")),
        "the whole path drawn"
    );
    assert_eq!(
        track.matches("<polyline class=\"track\"").count(),
        1,
        "the track"
    );
    // The fence with its hole, on both views.
    for view in [heat, track] {
        assert_eq!(
            view.matches("<polygon class=\"fence\" data-rule=\"depot\"")
                .count(),
            1
        );
        assert_eq!(
            view.matches("<polygon class=\"fence hole\" data-rule=\"depot\"")
                .count(),
            1
        );
    }
    assert!(
        dom.contains(&format!(">{device}</option>")),
        "the device list"
    );

    // The screenshot has the structure of the views: heat tiles and the track in their own
    // halves of the page, geofence edges in both.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("iotflow-ui-geo.png");
    let _ = std::fs::remove_file(&shot);
    render_sized(&url, 6000, Some(&shot), (1400, 2600));
    let classes = pixel_classes(&shot);
    eprintln!("screenshot {}: {classes:?}", shot.display());
    let (tile_px, tile_x) = classes.get("tile").copied().unwrap_or_default();
    let (track_px, track_x) = classes.get("track").copied().unwrap_or_default();
    let (fence_px, _) = classes.get("fence").copied().unwrap_or_default();
    assert!(
        tile_px > 2_000,
        "heat-map tiles in the screenshot: {classes:?}"
    );
    assert!(track_px > 150, "the track in the screenshot: {classes:?}");
    assert!(
        fence_px > 300,
        "geofence edges in the screenshot: {classes:?}"
    );
    assert!(
        tile_x < 700.0 && track_x > 700.0,
        "tiles left, track right: {classes:?}"
    );
}
