//! The lake sink: Avro object container files, one directory per table, committed atomically
//! with the source position so that every change lands exactly once.

pub mod config;
pub mod inspect;
pub mod manifest;
pub mod ocf;
pub mod sink;
pub mod store;

pub use config::LakeConfig;
pub use sink::LakeSink;

/// The `[sink]` `kind = "lake"` descriptor: Avro files in a local directory, exactly-once.
pub struct Connector;

impl headwater_contract::SinkConnector for Connector {
    const KIND: &'static str = "lake";
    type Config = LakeConfig;

    fn validate(config: &LakeConfig) -> Result<(), String> {
        config.validate()
    }

    fn build(
        config: &LakeConfig,
    ) -> Result<Box<dyn headwater_contract::Sink>, headwater_contract::ConnectorError> {
        Ok(Box::new(LakeSink::new(config.clone())?))
    }
}
