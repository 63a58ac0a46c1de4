//! The bridge's metric families, in the process's registry (served at `/metrics`).

use iotflow_metrics::Metrics;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts};

/// Handles for the bridge's metrics, labelled with its job.
#[derive(Clone)]
pub struct BridgeMetrics {
    /// Messages received from MQTT (redeliveries included).
    pub received: IntCounter,
    /// Messages the broker sent again (the DUP flag: unacknowledged before a reconnect).
    pub redelivered: IntCounter,
    /// Messages Kafka acknowledged.
    pub forwarded: IntCounter,
    /// Messages acknowledged to MQTT (after Kafka).
    pub acknowledged: IntCounter,
    /// Redeliveries the ledger knew Kafka had: acknowledged, not sent again.
    pub duplicates_dropped: IntCounter,
    /// Retained messages the broker sent on (re)subscribing: acknowledged, not forwarded.
    pub retained_skipped: IntCounter,
    /// Messages forwarded without a key (no device id found).
    pub unkeyed: IntCounter,
    /// Messages whose topic named another device than their payload.
    pub key_mismatch: IntCounter,
    /// Kafka sends that failed (each is sent again).
    pub produce_errors: IntCounter,
    /// MQTT connection failures and losses.
    pub connection_errors: IntCounter,
    /// 1 while connected to the MQTT broker.
    pub connected: IntGauge,
    /// 1 once the broker acknowledged the subscriptions of the current connection.
    pub subscribed: IntGauge,
    /// Received, not yet acknowledged by Kafka.
    pub in_flight: IntGauge,
    /// Receive → Kafka acknowledgement.
    pub forward_seconds: Histogram,
}

impl BridgeMetrics {
    /// Registers the families in `metrics`' registry.
    pub fn register(metrics: &Metrics) -> BridgeMetrics {
        let r = metrics.registry();
        let labels = |o: Opts| {
            o.const_label("job_name", metrics.job_name())
                .const_label("job_id", metrics.job_id())
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::with_opts(labels(Opts::new(name, help))).expect("valid metric");
            r.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::with_opts(labels(Opts::new(name, help))).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let forward_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "iotflow_mqtt_forward_seconds",
                "From receiving an MQTT message to Kafka's acknowledgement of it.",
            )
            .const_label("job_name", metrics.job_name())
            .const_label("job_id", metrics.job_id())
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        r.register(Box::new(forward_seconds.clone()))
            .expect("unique metric");
        BridgeMetrics {
            received: counter("iotflow_mqtt_messages_received_total", "MQTT messages received (redeliveries included)."),
            redelivered: counter("iotflow_mqtt_messages_redelivered_total", "MQTT messages the broker sent again (DUP flag): unacknowledged when the bridge lost its connection or stopped; they may be in Kafka twice."),
            forwarded: counter("iotflow_mqtt_messages_forwarded_total", "MQTT messages the Kafka broker acknowledged."),
            acknowledged: counter("iotflow_mqtt_messages_acknowledged_total", "MQTT messages acknowledged to the MQTT broker, each after Kafka acknowledged it."),
            duplicates_dropped: counter("iotflow_mqtt_duplicates_dropped_total", "Redelivered MQTT messages the bridge's ledger knew Kafka already had: acknowledged without sending them again."),
            retained_skipped: counter("iotflow_mqtt_retained_skipped_total", "Retained MQTT messages the broker sent because the bridge (re)subscribed: acknowledged, not forwarded (the session received them live when they were published)."),
            unkeyed: counter("iotflow_mqtt_messages_unkeyed_total", "Messages forwarded without a Kafka key: no device id in the payload or the topic (the stream job dead-letters them with their reason)."),
            key_mismatch: counter("iotflow_mqtt_key_mismatch_total", "Messages whose topic named a different device than their payload's pboxid (keyed by the payload's)."),
            produce_errors: counter("iotflow_mqtt_produce_errors_total", "Kafka sends that failed; each is sent again until Kafka acknowledges it."),
            connection_errors: counter("iotflow_mqtt_connection_errors_total", "Failed or lost connections to the MQTT broker (each is retried)."),
            connected: gauge("iotflow_mqtt_connected", "1 while the bridge is connected to the MQTT broker."),
            subscribed: gauge("iotflow_mqtt_subscribed", "1 once the MQTT broker acknowledged the bridge's subscriptions on the current connection."),
            in_flight: gauge("iotflow_mqtt_in_flight", "Messages received from MQTT and not yet acknowledged by Kafka."),
            forward_seconds,
        }
    }
}
