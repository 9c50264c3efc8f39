//! What a connector crate exports so the binary can offer it: one descriptor type per crate,
//! implementing [`SourceConnector`] or [`SinkConnector`]. The binary keeps the list of
//! descriptors in one place (`src/config.rs`), from which the `kind` names, the config
//! parsing, validation and construction all follow: a new connector is one crate and one line.

use crate::connector::{Sink, Source};
use crate::error::ConnectorError;
use crate::schema::ConnectorKind;
use serde::de::DeserializeOwned;
use std::path::Path;

/// A source connector: `[source]` with `kind = KIND`.
pub trait SourceConnector {
    /// The `kind` that selects it in `[source]`.
    const KIND: &'static str;
    /// Which envelope `source` block its records carry.
    const CONNECTOR: ConnectorKind;
    /// The rest of its `[source]` section.
    type Config: DeserializeOwned + Clone + std::fmt::Debug;

    /// Checks the section's values; pure, nothing connects.
    fn validate(config: &Self::Config) -> Result<(), String>;

    /// The logical server name (`source.name`): topic and schema names start with it.
    fn server_name(config: &Self::Config) -> &str;

    /// The source, keeping what it must remember (schema history) under `state_dir`.
    fn build(config: &Self::Config, state_dir: &Path) -> Result<Box<dyn Source>, ConnectorError>;
}

/// A sink connector: `[sink]` with `kind = KIND`.
pub trait SinkConnector {
    /// The `kind` that selects it in `[sink]`.
    const KIND: &'static str;
    /// The rest of its `[sink]` section.
    type Config: DeserializeOwned + Clone + std::fmt::Debug;

    /// Checks the section's values; pure, nothing connects.
    fn validate(config: &Self::Config) -> Result<(), String>;

    fn build(config: &Self::Config) -> Result<Box<dyn Sink>, ConnectorError>;
}
