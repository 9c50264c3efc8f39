//! The pipeline configuration file (TOML): `[source]`, `[sink]`, `[state]` and an optional
//! `[pipeline]`. Every section is closed (`deny_unknown_fields`); sources and sinks are tagged
//! by `kind`. `${VAR}` anywhere in the file is replaced by the environment variable VAR.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub sink: SinkConfig,
    pub state: StateConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// `[metrics]`: the Prometheus endpoint; without the section none is served.
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`: serve Prometheus metrics at `/metrics`, plus `/health` (the process is up)
/// and `/ready` (the source is streaming and the sink is open). Off unless configured: a
/// port is a deployment decision, and two pipelines on one host would collide on a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on, e.g. `"127.0.0.1:9187"` (`"0.0.0.0:9187"` for every interface).
    pub listen: std::net::SocketAddr,
    /// Count values and NULLs per table and column (`headwater_column_*_total`).
    #[serde(default = "default_true")]
    pub column_stats: bool,
}

fn default_true() -> bool {
    true
}

pub use crate::connectors::{SinkConfig, SourceConfig};

/// Splits a `kind`-tagged section into its kind and the remaining keys.
pub(crate) fn tagged_section<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    section: &str,
    kinds: &[&str],
) -> Result<(String, toml::Table), D::Error> {
    use serde::de::Error;
    let mut table = toml::Table::deserialize(deserializer)?;
    let allowed = kinds
        .iter()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(" or ");
    let kind = match table.remove("kind") {
        Some(toml::Value::String(kind)) if kinds.contains(&kind.as_str()) => kind,
        Some(other) => {
            return Err(D::Error::custom(format!(
                "{section}.kind = {other} is not known: use {allowed}"
            )))
        }
        None => {
            return Err(D::Error::custom(format!(
                "{section}.kind is missing: use {allowed}"
            )))
        }
    };
    Ok((kind, table))
}

/// Deserializes a section's keys, naming the full key path of any bad value.
pub(crate) fn section_body<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    section: &str,
    table: toml::Table,
) -> Result<T, E> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
        match err.path().to_string().as_str() {
            // a key left out: the section as a whole is wrong
            "." => E::custom(format!("[{section}]: {}", err.inner())),
            path => {
                let hint = if err.inner().to_string().contains("expected a duration") {
                    " (write it as \"500ms\", \"10s\", \"5m\" or \"1h\")"
                } else {
                    ""
                };
                E::custom(format!("{section}.{path}: {}{hint}", err.inner()))
            }
        }
    })
}

/// `[state]`: where Headwater keeps its checkpoint and each table's schema history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory for the checkpoint file; created if missing. One pipeline per directory.
    pub path: PathBuf,
}

/// `[pipeline]`: tuning; the defaults suit most pipelines.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most records handed to the sink but not yet acknowledged; when reached the runtime asks
    /// the sink to flush, and the source waits (bounded memory).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How often the durable position is written to the checkpoint file.
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// How often the source's log retention is checked against the durable position (lag in
    /// bytes, time until the position is purged).
    #[serde(default = "default_retention_check_interval", with = "humantime_serde")]
    pub retention_check_interval: Duration,
    /// Warn in the log when the source may discard the log the position needs sooner than this.
    #[serde(default = "default_position_loss_warning", with = "humantime_serde")]
    pub position_loss_warning: Duration,
    /// Write a BEGIN and an END record around each transaction to the transaction stream.
    #[serde(default)]
    pub transaction_events: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_in_flight: default_max_in_flight(),
            checkpoint_interval: default_checkpoint_interval(),
            retention_check_interval: default_retention_check_interval(),
            position_loss_warning: default_position_loss_warning(),
            transaction_events: false,
        }
    }
}

fn default_max_in_flight() -> usize {
    250_000
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_retention_check_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_position_loss_warning() -> Duration {
    Duration::from_secs(6 * 3600)
}

/// A configuration problem, naming the key, the bad value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: environment variable {var} is not set (it is used as ${{{var}}}); export it or write the value into the file")]
    MissingEnv { path: PathBuf, var: String },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Replaces `${VAR}` with the environment's value; `$${` stays a literal `${`.
fn expand_env(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::Parse {
                path: path.to_path_buf(),
                message: "`${` without a closing `}`".into(),
            });
        };
        let var = &after[..end];
        let value = lookup(var).ok_or_else(|| ConfigError::MissingEnv {
            path: path.to_path_buf(),
            var: var.to_string(),
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The line (from 1) of `text` where the first `section.key[.sub…]` a validation message
/// names is set, so the error points at the line to change. Keys are found as written in a
/// `[section]` or `[section.key]` table, plain, dotted (`key.sub = …`) or inline
/// (`key = { sub = … }`); `None` when not found (a default was wrong).
fn line_of_named_key(text: &str, message: &str) -> Option<usize> {
    const SECTIONS: [&str; 5] = ["source", "sink", "state", "pipeline", "metrics"];
    let named: Vec<&str> = message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .map(|word| word.trim_end_matches('.'))
        .find(|word| {
            word.split_once('.')
                .is_some_and(|(section, key)| SECTIONS.contains(&section) && !key.is_empty())
        })?
        .split('.')
        .collect();
    let path_of = |keys: &str| -> Vec<String> {
        keys.split('.')
            .map(|k| k.trim().trim_matches('"').to_string())
            .collect()
    };
    // one path is the other's start: `[source.columns]` + `exclude` for source.columns.exclude
    let related =
        |defined: &[String]| defined.len() >= 2 && defined.iter().zip(&named).all(|(d, n)| d == n);
    let mut table: Vec<String> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            table = path_of(header.trim_start_matches('[').trim_end_matches(']'));
            if related(&table) && table.len() >= named.len() {
                return Some(index + 1);
            }
            continue;
        }
        let Some((keys, _)) = line.split_once('=') else {
            continue;
        };
        let mut defined = table.clone();
        defined.extend(path_of(keys));
        if related(&defined) {
            return Some(index + 1);
        }
    }
    None
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path, &|var| std::env::var(var).ok())
    }

    /// Parses and validates a config text; `lookup` resolves `${VAR}`.
    pub fn parse(
        text: &str,
        path: &Path,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let expanded = expand_env(text, path, lookup)?;
        let config: Config = toml::from_str(&expanded).map_err(|err| {
            // A section read through its `kind` loses TOML's spans (the error points at the
            // section or the document's start), but the message names `section.key`: point
            // at that key's line.
            match line_of_named_key(text, err.message()) {
                Some(line) => ConfigError::Parse {
                    path: PathBuf::from(format!("{}:{line}", path.display())),
                    message: err.message().trim().to_string(),
                },
                None => ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: err.to_string(),
                },
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: match line_of_named_key(text, &message) {
                Some(line) => PathBuf::from(format!("{}:{line}", path.display())),
                None => path.to_path_buf(),
            },
            message,
        })?;
        Ok(config)
    }

    /// Checks every section's values; pure, nothing connects.
    pub fn validate(&self) -> Result<(), String> {
        self.source.validate()?;
        self.sink.validate()?;
        let name = self.source.server_name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "source.name = {name:?} is not allowed: use letters, digits, `_` and `-` (it names topics and directories)"
            ));
        }
        if self.state.path.as_os_str().is_empty() {
            return Err(
                "state.path is empty: set it to a directory, e.g. path = \"./headwater-state\""
                    .into(),
            );
        }
        if self.pipeline.max_in_flight < 1000 {
            return Err(format!(
                "pipeline.max_in_flight = {} is too small: use at least 1000",
                self.pipeline.max_in_flight
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [source]
        kind = "mysql"
        url = "mysql://headwater:${PW}@127.0.0.1:3306"
        name = "shop"
        server_id = 5401
        include = ["shop.*"]
        [sink]
        kind = "lake"
        path = "./lake"
        commit_interval = "2s"
        [state]
        path = "./state"
    "#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), &|var| {
            (var == "PW").then(|| "s3cret".to_string())
        })
    }

    #[test]
    fn a_good_config_parses_with_env_substitution() {
        let config = parse(GOOD).unwrap();
        let SourceConfig::Mysql(mysql) = &config.source else {
            panic!("a mysql source")
        };
        assert_eq!(mysql.url, "mysql://headwater:s3cret@127.0.0.1:3306");
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "secrets must never be printed"
        );
        let SinkConfig::Lake(lake) = &config.sink else {
            panic!("a lake sink")
        };
        assert_eq!(lake.commit_interval, Duration::from_secs(2));
        assert_eq!(config.pipeline.max_in_flight, 250_000);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let text = GOOD.replace("server_id = 5401", "server_id = 5401\nserverid = 1");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("serverid"), "{err}");
    }

    #[test]
    fn an_unknown_kind_lists_the_allowed_ones() {
        let text = GOOD.replace("kind = \"lake\"", "kind = \"s3\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("s3") && err.contains("lake"), "{err}");
    }

    #[test]
    fn a_missing_variable_is_named() {
        let text = GOOD.replace("${PW}", "${NOT_SET_ANYWHERE}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("NOT_SET_ANYWHERE"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key_and_the_fix() {
        let cases = [
            (
                GOOD.replace("server_id = 5401", "server_id = 0"),
                "source.server_id",
            ),
            (GOOD.replace("mysql://", "postgres://"), "mysql://"),
            (
                GOOD.replace("name = \"shop\"", "name = \"my shop\""),
                "source.name",
            ),
            (GOOD.replace("\"shop.*\"", "\"shop\""), "source.include"),
            (
                GOOD.replace("commit_interval = \"2s\"", "commit_interval = \"1ms\""),
                "sink.commit_interval",
            ),
            (
                GOOD.replace("commit_interval = \"2s\"", "commit_interval = \"soon\""),
                "commit_interval",
            ),
        ];
        for (text, key) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "expected {key} in: {err}");
        }
    }

    #[test]
    fn a_bad_value_is_reported_at_its_line() {
        let text = GOOD.replace("server_id = 5401", "server_id = 0");
        let line = text
            .lines()
            .position(|l| l.trim() == "server_id = 0")
            .expect("the line")
            + 1;
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("test.toml:{line}:")),
            "the error points at line {line}: {err}"
        );
        // a syntax error or an unknown key: TOML's own message carries the line
        let err = parse(&GOOD.replace("server_id = 5401", "server_id = = 5"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line "), "{err}");
        // an unknown key: at its line too
        let text = GOOD.replace("server_id = 5401", "server_id = 5401\nserverid = 1");
        let line = text
            .lines()
            .position(|l| l.trim() == "serverid = 1")
            .expect("the line")
            + 1;
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("test.toml:{line}:")), "{err}");
    }

    #[test]
    fn a_nested_key_is_found_dotted_in_its_table_or_under_its_own_header() {
        let message = "source.columns.exclude pattern `t.id` must name columns";
        let dotted = "[source]\nkind = \"mysql\"\ncolumns.exclude = [\"t.id\"]\n[sink]\n";
        assert_eq!(line_of_named_key(dotted, message), Some(3));
        let table =
            "[source]\nkind = \"mysql\"\n\n[source.columns]\nmask = {}\nexclude = [\"t.id\"]\n";
        assert_eq!(line_of_named_key(table, message), Some(6));
        let inline = "[source]\ncolumns = { exclude = [\"t.id\"] }\n";
        assert_eq!(line_of_named_key(inline, message), Some(2));
        assert_eq!(line_of_named_key("[sink]\nexclude = 1\n", message), None);
    }

    #[test]
    fn literal_dollar_brace_survives() {
        let path = Path::new("x");
        let out = expand_env("a$${B}c", path, &|_| None).unwrap();
        assert_eq!(out, "a${B}c");
    }

    #[test]
    fn every_example_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                Config::parse(&text, &path, &|_| Some("example".to_string()))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                seen += 1;
            }
        }
        assert!(seen > 0, "no example configs found in {}", dir.display());
    }
}

/// Every key of every config section is in the README's configuration reference, so the two
/// cannot drift: the keys come from the config structs themselves (the field list serde hands
/// a deserializer), the documented ones from the README's table under the section's heading.
/// The field names of a config struct, as serde hands them to a deserializer.
#[cfg(test)]
pub(crate) mod field_names {
    use serde::de::{self, Visitor};
    use serde::Deserialize;

    /// A deserializer that records the field names a struct asks for, then stops.
    struct FieldNames(Vec<&'static str>);

    #[derive(Debug)]
    struct Stop;

    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }

    impl std::error::Error for Stop {}

    impl de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    impl<'de> de::Deserializer<'de> for &mut FieldNames {
        type Error = Stop;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    pub(crate) fn keys<T: for<'de> Deserialize<'de>>() -> Vec<&'static str> {
        let mut names = FieldNames(Vec::new());
        let _ = T::deserialize(&mut names);
        assert!(
            !names.0.is_empty(),
            "{} lists its fields",
            std::any::type_name::<T>()
        );
        names.0
    }
}

#[cfg(test)]
mod documented {
    use super::field_names::keys;
    use super::*;

    /// The keys in the first table after the README heading that starts with `heading`.
    fn documented_keys(readme: &str, heading: &str) -> Vec<String> {
        let start = readme
            .find(&format!("\n### {heading}"))
            .unwrap_or_else(|| panic!("README has a section `### {heading}`"));
        let section = &readme[start + 1..];
        let end = ["\n## ", "\n### "]
            .iter()
            .filter_map(|next| section[4..].find(next))
            .min()
            .map_or(section.len(), |e| e + 4);
        // every `key` in a row's first cell (a row may document two keys together)
        section[..end]
            .lines()
            .filter(|line| line.starts_with("| `"))
            .filter_map(|line| line[1..].split(" |").next())
            .flat_map(|cell| {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_config_key_is_in_the_readme() {
        let readme = include_str!("../README.md");
        let mut sections: Vec<(String, Vec<&'static str>)> = Vec::new();
        for (kind, keys) in SourceConfig::keys_by_kind() {
            sections.push((format!("`[source]` with `kind = \"{kind}\"`"), keys));
        }
        for (kind, keys) in SinkConfig::keys_by_kind() {
            sections.push((format!("`[sink]` with `kind = \"{kind}\"`"), keys));
        }
        sections.push(("`[state]`".into(), keys::<StateConfig>()));
        sections.push(("`[pipeline]`".into(), keys::<PipelineConfig>()));
        sections.push(("`[metrics]`".into(), keys::<MetricsConfig>()));
        let mut missing = Vec::new();
        for (heading, fields) in &sections {
            let documented = documented_keys(readme, heading);
            for field in fields {
                if !documented.iter().any(|d| d == field) {
                    missing.push(format!("{heading}: {field}"));
                }
            }
            for key in &documented {
                if key != "kind" && !fields.contains(&key.as_str()) {
                    missing.push(format!(
                        "{heading}: the README documents `{key}`, which is no key"
                    ));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "README's configuration reference lacks:\n{}",
            missing.join("\n")
        );
    }

    /// Every `section.key` the "Migrating from Debezium" table names is a key of some
    /// connector's section, so a renamed key cannot leave the migration guide pointing nowhere.
    #[test]
    fn the_debezium_migration_table_names_real_keys() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("\n### Migrating from Debezium")
            .expect("README has a section `### Migrating from Debezium`");
        let section = &readme[start + 1..];
        let end = section[4..].find("\n#").map_or(section.len(), |e| e + 4);
        let mut by_section: Vec<(&str, Vec<&'static str>)> = vec![
            ("state", keys::<StateConfig>()),
            ("pipeline", keys::<PipelineConfig>()),
        ];
        by_section.push((
            "source",
            SourceConfig::keys_by_kind()
                .into_iter()
                .flat_map(|(_, k)| k)
                .collect(),
        ));
        by_section.push((
            "sink",
            SinkConfig::keys_by_kind()
                .into_iter()
                .flat_map(|(_, k)| k)
                .collect(),
        ));
        let mut named = 0;
        let mut unknown = Vec::new();
        for line in section[..end].lines().filter(|l| l.starts_with("| ")) {
            let Some(cell) = line.split(" | ").nth(1) else {
                continue;
            };
            for code in cell.split('`').skip(1).step_by(2) {
                let mut parts = code.trim_start_matches('[').split(['.', ' ', ']']);
                let (Some(section_name), Some(key)) = (parts.next(), parts.next()) else {
                    continue;
                };
                if let Some((_, keys)) = by_section.iter().find(|(s, _)| *s == section_name) {
                    named += 1;
                    if !keys.contains(&key) {
                        unknown.push(code.to_string());
                    }
                }
            }
        }
        assert!(named > 20, "the migration table names {named} keys");
        assert!(unknown.is_empty(), "no such keys: {unknown:?}");
    }
}
