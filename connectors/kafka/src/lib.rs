//! The Kafka sink: one topic per table, the primary key as message key (so one row's changes
//! stay ordered in one partition), values in the schema-registry wire format or as JSON.

pub mod config;
pub mod heartbeat;
pub mod registry;
pub mod sink;

pub use config::KafkaConfig;
pub use sink::KafkaSink;

/// The `[sink]` `kind = "kafka"` descriptor: a topic per table, at-least-once.
pub struct Connector;

impl headwater_contract::SinkConnector for Connector {
    const KIND: &'static str = "kafka";
    type Config = KafkaConfig;

    fn validate(config: &KafkaConfig) -> Result<(), String> {
        config.validate()
    }

    fn build(
        config: &KafkaConfig,
    ) -> Result<Box<dyn headwater_contract::Sink>, headwater_contract::ConnectorError> {
        Ok(Box::new(KafkaSink::new(config.clone())?))
    }
}
