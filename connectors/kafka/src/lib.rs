//! The Kafka sink: one topic per table, the primary key as message key (so one row's changes
//! stay ordered in one partition), values in the schema-registry wire format or as JSON.

pub mod config;
pub mod registry;
pub mod sink;

pub use config::KafkaConfig;
pub use sink::KafkaSink;
