//! The PostgreSQL source: a logical replication slot with the built-in `pgoutput` plugin.

pub mod config;
pub mod pgoutput;
pub mod protocol;
pub mod types;
pub use config::PostgresConfig;
pub mod catalog;
mod failover;
mod preflight;
mod replication;
pub mod server;
pub mod source;
pub mod stream;
pub use source::PostgresSource;
pub mod snapshot;
pub mod tls;

/// The `[source]` `kind = "postgres"` descriptor: a logical replication slot (pgoutput).
pub struct Connector;

impl headwater_contract::SourceConnector for Connector {
    const KIND: &'static str = "postgres";
    const CONNECTOR: headwater_contract::ConnectorKind =
        headwater_contract::ConnectorKind::Postgres;
    type Config = PostgresConfig;

    fn validate(config: &PostgresConfig) -> Result<(), String> {
        config.validate().map(|_| ())
    }

    fn server_name(config: &PostgresConfig) -> &str {
        &config.name
    }

    fn build(
        config: &PostgresConfig,
        state_dir: &std::path::Path,
    ) -> Result<Box<dyn headwater_contract::Source>, headwater_contract::ConnectorError> {
        Ok(Box::new(PostgresSource::new(config.clone(), state_dir)?))
    }
}
