//! The Apache Iceberg sink (in progress).
pub mod catalog;
pub mod config;
pub mod schema;
