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
