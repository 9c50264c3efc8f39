//! The lakehouse sinks' shared machinery: per source table a current-state mirror and a
//! changelog, gathered in rounds as Arrow batches and committed exactly once with the source
//! position by a table format ([`format::TableFormat`]: Delta Lake, Apache Iceberg).

mod arena;
pub mod arrow_rows;
pub mod batch;
pub mod changelog;
pub mod committer;
pub mod error;
pub mod file_reader;
pub mod files;
pub mod format;
pub mod maintenance;
mod merge;
pub mod mirror;
pub mod options;
pub mod schema_changes;
pub mod sink;

pub use format::{
    FileBatches, FileWriter, LiveFile, Operation, TableCommit, TableFormat, TableTarget,
};
pub use options::{TableKind, TableOptions};
pub use sink::LakehouseSink;
