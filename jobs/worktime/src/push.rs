//! The Pushgateway push of a run's metrics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use iotflow_config::Config;

use crate::DaySummary;

/// The Pushgateway exposition of a run. On success every metric (PUT replaces the group); on
/// failure only the failure metrics, sent with POST so `last_success` survives. Registry gauges
/// encoded by prometheus' `TextEncoder`, with the process and build telemetry every iotflow
/// service exposes (`iotflow_metrics::register_service_telemetry`).
pub fn exposition(summary: &DaySummary, success: bool, now: f64) -> String {
    use iotflow_metrics::{GaugeVec, Opts, Registry};
    let day = summary.day.map(|d| d.to_string()).unwrap_or_default();
    let registry = Registry::new();
    iotflow_metrics::register_service_telemetry(&registry);
    let metric = |name: &str, help: &str, value: f64| {
        let gauge = GaugeVec::new(Opts::new(name, help), &["day"]).expect("valid metric");
        registry
            .register(Box::new(gauge.clone()))
            .expect("unique metric");
        gauge.with_label_values(&[day.as_str()]).set(value);
    };
    metric(
        "iotflow_worktime_success",
        "Whether the last work-time run succeeded (1) or failed (0).",
        if success { 1.0 } else { 0.0 },
    );
    metric(
        "iotflow_worktime_last_run_timestamp_seconds",
        "When the last work-time run ended.",
        now,
    );
    if success {
        metric(
            "iotflow_worktime_last_success_timestamp_seconds",
            "When the last successful work-time run ended.",
            now,
        );
        metric(
            "iotflow_worktime_devices_analysed",
            "Devices with results in the last successful run.",
            summary.devices as f64,
        );
        metric(
            "iotflow_worktime_rows_read",
            "Readings read by the last successful run.",
            summary.rows_read as f64,
        );
        metric(
            "iotflow_worktime_duration_seconds",
            "Duration of the last successful run.",
            summary.seconds,
        );
    }
    iotflow_metrics::encode_text(&registry)
}

/// Pushes the run's metrics to the Pushgateway (group `job="iotflow-worktime"`). A push that
/// fails is logged, never fails the run.
pub(crate) async fn push(config: &Config, summary: &DaySummary, success: bool) {
    let base = config.worktime.pushgateway_url.trim_end_matches('/');
    if base.is_empty() {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let body = exposition(summary, success, now);
    let url = format!("{base}/metrics/job/iotflow-worktime");
    let client = reqwest::Client::new();
    let request = if success {
        client.put(&url)
    } else {
        client.post(&url)
    };
    match request
        .header("content-type", "text/plain; version=0.0.4")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(%url, status = %r.status(), "Pushgateway refused the run metrics"),
        Err(e) => tracing::warn!(%url, "cannot push the run metrics: {}", e.without_url()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_push_keeps_the_last_success() {
        let s = DaySummary::default();
        let failed = exposition(&s, false, 1.0);
        assert!(failed.contains("iotflow_worktime_success{day=\"\"} 0"));
        assert!(!failed.contains("last_success"));
        assert!(
            exposition(&s, true, 1.0).contains("iotflow_worktime_last_success_timestamp_seconds")
        );
        // The telemetry of every iotflow service rides along with each push.
        for text in [failed, exposition(&s, true, 1.0)] {
            assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
            assert!(text.contains("iotflow_build_info{"), "{text}");
            assert!(
                text.contains("# TYPE iotflow_worktime_success gauge"),
                "{text}"
            );
        }
    }
}
