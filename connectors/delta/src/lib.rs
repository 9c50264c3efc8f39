//! The Delta Lake sink: per source table a current-state mirror and a changelog, as Delta tables
//! on local disk or S3, committed exactly once with the source position.

mod arena;
pub mod arrow_rows;
pub mod batch;
pub mod changelog;
pub mod committer;
pub mod config;
pub mod error;
mod file_reader;
pub mod maintenance;
mod merge;
pub mod mirror;
pub mod schema_changes;
pub mod sink;
pub mod table;

pub use config::DeltaConfig;
pub use sink::DeltaSink;

pub(crate) use headwater_contract::now_ms;

/// The `[sink]` `kind = "delta"` descriptor: Delta Lake tables (mirror and changelog), local or S3, exactly-once.
pub struct Connector;

impl headwater_contract::SinkConnector for Connector {
    const KIND: &'static str = "delta";
    type Config = DeltaConfig;

    fn validate(config: &DeltaConfig) -> Result<(), String> {
        config.validate()
    }

    fn build(
        config: &DeltaConfig,
    ) -> Result<Box<dyn headwater_contract::Sink>, headwater_contract::ConnectorError> {
        Ok(Box::new(DeltaSink::new(config.clone())?))
    }
}
