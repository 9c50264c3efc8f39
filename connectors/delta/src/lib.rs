//! The Delta Lake sink: per source table a current-state mirror and a changelog, as Delta tables
//! on local disk or S3, committed exactly once with the source position. The rounds, merges and
//! recovery are the lakehouse sink's ([`headwater_lakehouse`]); this crate is the format.

pub mod config;
pub mod error;
pub mod format;
pub mod table;
mod vacuum;

pub use config::DeltaConfig;
pub use format::DeltaFormat;

/// The Delta sink: the lakehouse sink writing Delta tables.
pub type DeltaSink = headwater_lakehouse::LakehouseSink<DeltaFormat>;

/// Builds the sink `config` describes.
pub fn sink(config: DeltaConfig) -> Result<DeltaSink, headwater_contract::ConnectorError> {
    let options = config.options();
    DeltaSink::new(DeltaFormat::new(config)?, options)
}

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
        Ok(Box::new(sink(config.clone())?))
    }
}
