use iotflow_config::KafkaConfig;
use rdkafka::ClientConfig;

/// A Kafka problem that stops the job from starting.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client could not be created (bad property, bad broker list).
    #[error("cannot create Kafka client for {brokers}: {source}")]
    Client {
        /// Bootstrap servers.
        brokers: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// Topic metadata could not be read.
    #[error("cannot read metadata of topic `{topic}` from {brokers}: {reason}. Is the broker up (bash deploy/local/start.sh) and the topic created (bash deploy/local/topics.sh)?")]
    Metadata {
        /// Topic.
        topic: String,
        /// Bootstrap servers.
        brokers: String,
        /// Why.
        reason: String,
    },
}

/// The client settings every iotflow client shares, then the user's `kafka.properties`.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers);
    // librdkafka logs through its own callback; keep the noise at warning level.
    c.set("log_level", "4");
    for (k, v) in &kafka.properties {
        c.set(k, v);
    }
    c
}
