use headwater_contract::{flat::flattener_for, EnvelopeKind, FlatDeletes, FlatField, Flattener};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[sink] kind = "kafka"`: one topic per table, the primary key as message key, values in the
/// Confluent wire format (Avro with a registry schema id) or as JSON.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// First part of every topic name.
    pub topic_prefix: String,
    /// Topic of a table: `{prefix}`, `{namespace}` (MySQL database / PostgreSQL schema) and
    /// `{table}` are replaced.
    #[serde(default = "default_template")]
    pub topic_template: String,
    /// Topic of schema-change (DDL) records.
    #[serde(default = "default_schema_changes")]
    pub schema_change_topic: String,
    /// Topic of transaction BEGIN/END records (`pipeline.transaction_events`).
    #[serde(default = "default_transactions")]
    pub transaction_topic: String,
    /// How often a heartbeat record goes to `heartbeat_topic` (zero: never), Debezium's
    /// `heartbeat.interval.ms`.
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Topic of heartbeat records; `{prefix}` is replaced.
    #[serde(default = "default_heartbeats")]
    pub heartbeat_topic: String,
    /// Confluent-compatible schema registry URL; required with `format = "avro"`.
    #[serde(default)]
    pub schema_registry: Option<String>,
    /// `"avro"` (Confluent wire format) or `"json"` (the envelope as JSON, no registry).
    #[serde(default)]
    pub format: Format,
    /// Partitions of topics Headwater creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics Headwater creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Topic configs for created topics, e.g. `"cleanup.policy" = "compact"`.
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
    /// Follow each delete with a tombstone (same key, null value) so compacted topics forget the row.
    #[serde(default = "yes")]
    pub tombstones: bool,
    /// `"debezium"` (the change event) or `"flat"` (the row's columns and `flat_fields`).
    #[serde(default)]
    pub envelope: EnvelopeKind,
    /// With `envelope = "flat"`: metadata fields added as `__<name>` (default `op`, `source_ts_ms`).
    #[serde(default)]
    pub flat_fields: Option<Vec<FlatField>>,
    /// With `envelope = "flat"`: `"tombstone"` (default), `"rewrite"` or `"drop"` for deletes.
    #[serde(default)]
    pub flat_deletes: Option<FlatDeletes>,
    /// Any librdkafka producer setting, passed through (`security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `ssl.ca.location`, `compression.type`, `linger.ms`, …).
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    /// Producer settings that hold secrets (`sasl.password`, `ssl.key.password`, …) are hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let producer: BTreeMap<&str, &str> = self
            .producer
            .iter()
            .map(|(k, v)| {
                let secret =
                    k.contains("password") || k.contains("secret") || k.contains("sasl.jaas");
                (k.as_str(), if secret { "***" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("topic_template", &self.topic_template)
            .field("schema_registry", &self.schema_registry)
            .field("format", &self.format)
            .field("envelope", &self.envelope)
            .field("producer", &producer)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Avro,
    Json,
}

fn default_template() -> String {
    "{prefix}.{namespace}.{table}".into()
}

fn default_transactions() -> String {
    "{prefix}.transaction".into()
}

/// Debezium's default (`heartbeat.topics.prefix` = `__debezium-heartbeat`).
fn default_heartbeats() -> String {
    "__debezium-heartbeat.{prefix}".into()
}

fn default_schema_changes() -> String {
    "{prefix}.schema-changes".into()
}

fn default_partitions() -> i32 {
    6
}

fn default_replication() -> i32 {
    1
}

fn yes() -> bool {
    true
}

/// Settings Headwater's delivery guarantee rests on; the config may not weaken them.
pub const FIXED_PRODUCER_SETTINGS: &[(&str, &str)] =
    &[("enable.idempotence", "true"), ("acks", "all")];

impl KafkaConfig {
    /// Checks the values alone, before anything connects.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("sink.brokers is empty: give host:port of at least one broker".into());
        }
        if self.topic_prefix.is_empty() {
            return Err(
                "sink.topic_prefix is empty: it names every topic, e.g. topic_prefix = \"shop\""
                    .into(),
            );
        }
        if !self.topic_template.contains("{table}") {
            return Err(format!(
                "sink.topic_template = {:?} lacks {{table}}: every table needs its own topic",
                self.topic_template
            ));
        }
        if self.format == Format::Avro && self.schema_registry.is_none() {
            return Err("sink.format = \"avro\" needs sink.schema_registry (its URL), or use format = \"json\"".into());
        }
        if self.heartbeat_topic().trim().is_empty() {
            return Err("sink.heartbeat_topic is empty: name a topic, or leave it out for \"__debezium-heartbeat.{prefix}\"".into());
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return Err("sink.partitions and sink.replication_factor must be at least 1".into());
        }
        for (key, value) in FIXED_PRODUCER_SETTINGS {
            if let Some(given) = self.producer.get(*key) {
                if given != value {
                    return Err(format!(
                        "sink.producer.\"{key}\" = {given:?} would break delivery guarantees; Headwater always uses {value:?}: remove it"
                    ));
                }
            }
        }
        self.flattener().map(|_| ())
    }

    /// What `envelope`, `flat_fields` and `flat_deletes` ask for (`None`: the change event).
    pub fn flattener(&self) -> Result<Option<Flattener>, String> {
        flattener_for(
            self.envelope,
            self.flat_fields.as_deref(),
            self.flat_deletes,
            FlatDeletes::Tombstone,
            true,
        )
    }

    /// The topic of a table: the template filled in, with every character Kafka does not
    /// allow in a topic name (it allows `[A-Za-z0-9._-]`, 249 at most) replaced by `_`, as
    /// Debezium does: a table named `order items` or `bestellungen_ü` gets a topic.
    pub fn topic_for(&self, namespace: &str, table: &str) -> String {
        let name = self
            .topic_template
            .replace("{prefix}", &self.topic_prefix)
            .replace("{namespace}", namespace)
            .replace("{table}", table);
        name.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(249)
            .collect()
    }

    pub fn transaction_topic(&self) -> String {
        self.transaction_topic
            .replace("{prefix}", &self.topic_prefix)
    }

    pub fn heartbeat_topic(&self) -> String {
        self.heartbeat_topic.replace("{prefix}", &self.topic_prefix)
    }

    pub fn schema_change_topic(&self) -> String {
        self.schema_change_topic
            .replace("{prefix}", &self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig {
            brokers: "b:9092".into(),
            topic_prefix: "shop".into(),
            topic_template: default_template(),
            schema_change_topic: default_schema_changes(),
            transaction_topic: default_transactions(),
            heartbeat_interval: Duration::ZERO,
            heartbeat_topic: default_heartbeats(),
            schema_registry: Some("http://r".into()),
            format: Format::Avro,
            partitions: 6,
            replication_factor: 1,
            topic_config: BTreeMap::new(),
            tombstones: true,
            envelope: EnvelopeKind::Debezium,
            flat_fields: None,
            flat_deletes: None,
            producer: BTreeMap::from([("sasl.password".to_string(), "hunter2".to_string())]),
        }
    }

    #[test]
    fn secrets_in_producer_settings_are_never_printed() {
        assert!(!format!("{:?}", config()).contains("hunter2"));
    }

    #[test]
    fn settings_that_would_weaken_delivery_are_refused() {
        let mut weak = config();
        weak.producer.insert("acks".into(), "1".into());
        let err = weak.validate().unwrap_err();
        assert!(
            err.contains("sink.producer.\"acks\"") && err.contains("remove it"),
            "{err}"
        );
        let mut no_registry = config();
        no_registry.schema_registry = None;
        assert!(no_registry
            .validate()
            .unwrap_err()
            .contains("format = \"json\""));
        assert_eq!(config().topic_for("db", "t"), "shop.db.t");
        assert_eq!(config().schema_change_topic(), "shop.schema-changes");
        assert_eq!(config().heartbeat_topic(), "__debezium-heartbeat.shop");
    }

    #[test]
    fn odd_table_names_get_legal_topic_names() {
        assert_eq!(
            config().topic_for("my db", "we`ird \"t\" 表/x"),
            "shop.my_db.we_ird__t____x"
        );
        let long = "t".repeat(400);
        assert_eq!(config().topic_for("db", &long).len(), 249);
    }
}
