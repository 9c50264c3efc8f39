//! The connectors this binary offers, one line each. Every connector crate exports a
//! descriptor (`headwater_contract::SourceConnector` or `SinkConnector`: its `kind`, config
//! type and constructor); from the list below follow the `[source]`/`[sink]` config enums,
//! the `kind` names `check` and errors offer, validation, construction, and the README check
//! that every config key is documented. Adding a connector: its crate, and one line here.

use crate::config::{section_body, tagged_section};
use headwater_contract::{
    ConnectorError, ConnectorKind, Sink, SinkConnector, Source, SourceConnector,
};
use serde::Deserialize;
use std::path::Path;

macro_rules! connectors {
    (
        sources { $($source:ident => $source_connector:ty,)+ }
        sinks { $($sink:ident => $sink_connector:ty,)+ }
    ) => {
        /// `[source]`: where changes are read, chosen by `kind`.
        #[derive(Debug)]
        pub enum SourceConfig {
            $($source(<$source_connector as SourceConnector>::Config),)+
        }

        /// `[sink]`: where records are written, chosen by `kind`.
        #[derive(Debug)]
        pub enum SinkConfig {
            $($sink(<$sink_connector as SinkConnector>::Config),)+
        }

        impl SourceConfig {
            /// Every source `kind`, in the list's order.
            pub const KINDS: &'static [&'static str] =
                &[$(<$source_connector as SourceConnector>::KIND,)+];

            fn from_section<E: serde::de::Error>(kind: &str, table: toml::Table) -> Result<Self, E> {
                $(if kind == <$source_connector as SourceConnector>::KIND {
                    return section_body("source", table).map(SourceConfig::$source);
                })+
                Err(E::custom(format!("source.kind = {kind:?} is not known")))
            }

            /// Checks the section's values; pure, nothing connects.
            pub fn validate(&self) -> Result<(), String> {
                match self {
                    $(SourceConfig::$source(c) => <$source_connector as SourceConnector>::validate(c),)+
                }
            }

            /// The logical server name (`source.name`).
            pub fn server_name(&self) -> &str {
                match self {
                    $(SourceConfig::$source(c) => <$source_connector as SourceConnector>::server_name(c),)+
                }
            }

            /// The source, and which envelope `source` block its records carry.
            pub fn build(
                &self,
                state_dir: &Path,
            ) -> Result<(Box<dyn Source>, ConnectorKind), ConnectorError> {
                match self {
                    $(SourceConfig::$source(c) => Ok((
                        <$source_connector as SourceConnector>::build(c, state_dir)?,
                        <$source_connector as SourceConnector>::CONNECTOR,
                    )),)+
                }
            }

            /// Each source kind with its config keys (for the README check).
            #[cfg(test)]
            pub(crate) fn keys_by_kind() -> Vec<(&'static str, Vec<&'static str>)> {
                vec![$((
                    <$source_connector as SourceConnector>::KIND,
                    crate::config::field_names::keys::<<$source_connector as SourceConnector>::Config>(),
                ),)+]
            }
        }

        impl SinkConfig {
            /// Every sink `kind`, in the list's order.
            pub const KINDS: &'static [&'static str] =
                &[$(<$sink_connector as SinkConnector>::KIND,)+];

            fn from_section<E: serde::de::Error>(kind: &str, table: toml::Table) -> Result<Self, E> {
                $(if kind == <$sink_connector as SinkConnector>::KIND {
                    return section_body("sink", table).map(SinkConfig::$sink);
                })+
                Err(E::custom(format!("sink.kind = {kind:?} is not known")))
            }

            /// Checks the section's values; pure, nothing connects.
            pub fn validate(&self) -> Result<(), String> {
                match self {
                    $(SinkConfig::$sink(c) => <$sink_connector as SinkConnector>::validate(c),)+
                }
            }

            pub fn build(&self) -> Result<Box<dyn Sink>, ConnectorError> {
                match self {
                    $(SinkConfig::$sink(c) => <$sink_connector as SinkConnector>::build(c),)+
                }
            }

            /// Each sink kind with its config keys (for the README check).
            #[cfg(test)]
            pub(crate) fn keys_by_kind() -> Vec<(&'static str, Vec<&'static str>)> {
                vec![$((
                    <$sink_connector as SinkConnector>::KIND,
                    crate::config::field_names::keys::<<$sink_connector as SinkConnector>::Config>(),
                ),)+]
            }
        }
    };
}

connectors! {
    sources {
        Mysql => headwater_mysql::Connector,
        Postgres => headwater_postgres::Connector,
    }
    sinks {
        Lake => headwater_lake::Connector,
        Delta => headwater_delta::Connector,
        Iceberg => headwater_iceberg::Connector,
        Kafka => headwater_kafka::Connector,
    }
}

impl<'de> Deserialize<'de> for SourceConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, table) = tagged_section(deserializer, "source", Self::KINDS)?;
        Self::from_section(&kind, table)
    }
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (kind, table) = tagged_section(deserializer, "sink", Self::KINDS)?;
        Self::from_section(&kind, table)
    }
}
