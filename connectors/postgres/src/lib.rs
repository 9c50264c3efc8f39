//! The PostgreSQL source: a logical replication slot with the built-in `pgoutput` plugin.

pub mod protocol;
pub mod pgoutput;
pub mod types;
pub mod config;
pub use config::PostgresConfig;
pub mod catalog;
pub mod stream;
pub mod source;
pub use source::PostgresSource;
