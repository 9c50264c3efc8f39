pub mod config;
pub use config::MysqlConfig;
pub mod decoder;
pub mod error;
pub mod gtid;
mod guard;
mod preflight;
mod read_event;
mod retention;
pub mod server;
pub mod source;
pub mod stream;
pub mod table;
pub use source::MysqlSource;
pub mod request;
pub mod snapshot;
mod sql_values;
mod statement;

/// The `[source]` `kind = "mysql"` descriptor: MySQL or MariaDB binlog.
pub struct Connector;

impl headwater_contract::SourceConnector for Connector {
    const KIND: &'static str = "mysql";
    const CONNECTOR: headwater_contract::ConnectorKind = headwater_contract::ConnectorKind::Mysql;
    type Config = MysqlConfig;

    fn validate(config: &MysqlConfig) -> Result<(), String> {
        config.validate().map(|_| ())
    }

    fn server_name(config: &MysqlConfig) -> &str {
        &config.name
    }

    fn build(
        config: &MysqlConfig,
        state_dir: &std::path::Path,
    ) -> Result<Box<dyn headwater_contract::Source>, headwater_contract::ConnectorError> {
        Ok(Box::new(MysqlSource::new(config.clone(), state_dir)?))
    }
}
