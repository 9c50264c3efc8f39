//! The Apache Iceberg sink: per source table a current-state mirror and a changelog, as Iceberg
//! v2 tables registered in a SQL catalog (a sqlite file by default), on local disk or S3,
//! committed exactly once with the source position in each snapshot's summary. The rounds,
//! merges and recovery are the lakehouse sink's ([`headwater_lakehouse`]); this crate is the
//! format.

pub mod catalog;
mod catalog_postgres;
mod commit;
pub mod config;
pub mod format;
mod manifests;
pub mod schema;
pub mod store;
pub mod table;
mod vacuum;
mod writer;

pub use config::IcebergConfig;
pub use format::IcebergFormat;

/// The Iceberg sink: the lakehouse sink writing Iceberg tables.
pub type IcebergSink = headwater_lakehouse::LakehouseSink<IcebergFormat>;

/// Builds the sink `config` describes (opening its catalog).
pub fn sink(config: IcebergConfig) -> Result<IcebergSink, headwater_contract::ConnectorError> {
    let options = config.options();
    IcebergSink::new(IcebergFormat::open(config)?, options)
}

/// The `[sink]` `kind = "iceberg"` descriptor: Apache Iceberg tables (mirror and changelog) in
/// a SQL catalog, local or S3, exactly-once.
pub struct Connector;

impl headwater_contract::SinkConnector for Connector {
    const KIND: &'static str = "iceberg";
    type Config = IcebergConfig;

    fn validate(config: &IcebergConfig) -> Result<(), String> {
        config.validate()
    }

    fn build(
        config: &IcebergConfig,
    ) -> Result<Box<dyn headwater_contract::Sink>, headwater_contract::ConnectorError> {
        Ok(Box::new(sink(config.clone())?))
    }
}
