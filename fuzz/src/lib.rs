//! The fuzz targets' bodies: each feeds bytes from outside through the same code the pipeline
//! runs on them, from the first byte the server sends to the typed change events.
//!
//! A target may return early on input the real stream could not carry (see each one), but never
//! skips Headwater's own checks: an `Err` is the right answer to bad bytes, a panic is a defect.

mod mysql;
mod postgres;

pub use mysql::{binlog_rows, binlog_stream};
pub use postgres::{pg_copy_rows, pg_protocol, pgoutput_stream};

/// `[source]` sections of both sources: TOML read into each source's configuration and
/// validated, as `headwater check` and `run` do.
pub fn source_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = toml::from_str::<headwater_mysql::MysqlConfig>(text) {
        let _ = config.validate();
    }
    if let Ok(config) = toml::from_str::<headwater_postgres::PostgresConfig>(text) {
        let _ = config.validate();
    }
}
