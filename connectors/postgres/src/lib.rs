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
