//! Which columns of a captured table reach the records, and how: `source.columns`, Debezium's
//! `column.include.list`/`column.exclude.list`, `column.mask.with.N.chars`,
//! `column.mask.hash.SHA-256.with.salt` and `column.truncate.to.N.chars`. Sources apply a
//! table's [`ColumnPlan`] to the decoded values before anything is encoded, so an excluded or
//! masked value never reaches a sink, the schema, a log line or a metric. The same plan
//! carries `source.decimal_handling` and `source.binary_handling` (Debezium's
//! `decimal.handling.mode` and `binary.handling.mode`).

use crate::avro::Value;
use crate::schema::{Column, FieldType, TableSchema, UNCHANGED_TOAST_COLUMN};
use crate::ConnectorError;
use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// `source.columns`: globs over `database.table.column` (MySQL) or `schema.table.column`
/// (PostgreSQL), matched without regard to case.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ColumnRulesConfig {
    /// For tables one of these names, only the matching columns (and the primary key) are kept.
    #[serde(default)]
    pub include: Vec<String>,
    /// Columns left out of every record and schema.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Column glob → number of `*` that replace each non-null value.
    #[serde(default)]
    pub mask: BTreeMap<String, usize>,
    /// Columns whose values become the hex SHA-256 of `hash_salt` followed by the value.
    #[serde(default)]
    pub hash: Vec<String>,
    /// Required with `hash`; keep it out of the file with `${VAR}`.
    #[serde(default)]
    pub hash_salt: Option<String>,
    /// Column glob → the number of characters (bytes, for binary columns) kept.
    #[serde(default)]
    pub truncate: BTreeMap<String, usize>,
}

impl fmt::Debug for ColumnRulesConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnRulesConfig")
            .field("include", &self.include)
            .field("exclude", &self.exclude)
            .field("mask", &self.mask)
            .field("hash", &self.hash)
            .field("hash_salt", &self.hash_salt.as_ref().map(|_| "***"))
            .field("truncate", &self.truncate)
            .finish()
    }
}

/// `source.decimal_handling`: how DECIMAL/NUMERIC values are carried.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DecimalHandling {
    /// Avro `decimal` (bytes with precision and scale); unconstrained numerics as exact text.
    #[default]
    Precise,
    /// Exact decimal text, for readers that show Avro decimals as bytes.
    String,
    /// The nearest double: digits beyond its 15–17 significant ones are lost.
    Double,
}

/// `source.binary_handling`: how binary values (BLOB, BINARY, BIT(n>1), bytea) are carried.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BinaryHandling {
    /// Avro `bytes`.
    #[default]
    Bytes,
    /// Standard base64 text (RFC 4648, padded).
    Base64,
    /// Lower-case hex text.
    Hex,
}

/// The value handling modes a source applies to every captured table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueHandling {
    pub decimal: DecimalHandling,
    pub binary: BinaryHandling,
}

/// A type change after the column's rule: a value handling mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conversion {
    /// `Decimal` of this scale to text.
    DecimalText(u32),
    /// `Decimal` of this scale to a double.
    DecimalDouble(u32),
    /// Exact decimal text (unconstrained numeric) to a double.
    TextDouble,
    Base64,
    Hex,
}

/// What happens to one source column.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Keep,
    Drop,
    Mask(Arc<str>),
    Hash,
    Truncate(usize),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Keep => "kept",
            Action::Drop => "excluded",
            Action::Mask(_) => "masked",
            Action::Hash => "hashed",
            Action::Truncate(_) => "truncated",
        }
    }
}

/// The compiled rules; cheap to ask when nothing is configured.
#[derive(Clone, Default)]
pub struct ColumnRules {
    handling: ValueHandling,
    include_tables: Option<GlobSet>,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    mask: Vec<(GlobMatcher, Arc<str>)>,
    hash: Option<GlobSet>,
    salt: Arc<[u8]>,
    truncate: Vec<(GlobMatcher, usize)>,
}

impl fmt::Debug for ColumnRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColumnRules")
            .field("configured", &!self.is_empty())
            .finish_non_exhaustive()
    }
}

fn column_glob(key: &str, pattern: &str) -> Result<globset::Glob, String> {
    if pattern.split('.').count() < 3 {
        return Err(format!(
            "source.columns.{key} pattern `{pattern}` must name columns as `database.table.column` globs, e.g. `shop.customers.email` or `*.*.password`"
        ));
    }
    GlobBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .map_err(|err| {
            format!("source.columns.{key} pattern `{pattern}` is not a valid glob: {err}")
        })
}

fn glob(key: &str, pattern: &str) -> Result<GlobMatcher, String> {
    column_glob(key, pattern).map(|g| g.compile_matcher())
}

/// The globs of `patterns`, `None` when there are none. `tables` takes the
/// `database.table` part of each column pattern.
fn glob_set(key: &str, patterns: &[String], tables: bool) -> Result<Option<GlobSet>, String> {
    let mut builder = GlobSetBuilder::new();
    let mut any = false;
    for pattern in patterns {
        let glob = column_glob(key, pattern)?;
        let glob = if tables {
            let (table, _) = pattern.rsplit_once('.').unwrap_or((pattern, ""));
            GlobBuilder::new(table)
                .case_insensitive(true)
                .build()
                .map_err(|err| format!("source.columns.{key} pattern `{pattern}`: {err}"))?
        } else {
            glob
        };
        builder.add(glob);
        any = true;
    }
    if !any {
        return Ok(None);
    }
    builder
        .build()
        .map(Some)
        .map_err(|err| format!("source.columns.{key} patterns could not be compiled: {err}"))
}

impl ColumnRulesConfig {
    /// Compiles the globs; a bad one is reported with its key.
    pub fn compile(&self) -> Result<ColumnRules, String> {
        self.compile_with(ValueHandling::default())
    }

    /// Compiles the globs, with the source's value handling modes.
    pub fn compile_with(&self, handling: ValueHandling) -> Result<ColumnRules, String> {
        let salt = match (&self.hash_salt, self.hash.is_empty()) {
            (Some(salt), _) if salt.is_empty() => {
                return Err("source.columns.hash_salt is empty: give a secret, e.g. hash_salt = \"${HEADWATER_HASH_SALT}\"".into())
            }
            (Some(salt), _) => Arc::from(salt.as_bytes()),
            (None, false) => {
                return Err("source.columns.hash needs source.columns.hash_salt, a secret kept out of the file, e.g. hash_salt = \"${HEADWATER_HASH_SALT}\"".into())
            }
            (None, true) => Arc::from(&[][..]),
        };
        for (key, rules) in [("mask", &self.mask), ("truncate", &self.truncate)] {
            if let Some((pattern, _)) = rules.iter().find(|(_, n)| **n == 0 || **n > 65_535) {
                return Err(format!(
                    "source.columns.{key} for `{pattern}` must be between 1 and 65535 characters"
                ));
            }
        }
        Ok(ColumnRules {
            handling,
            include_tables: glob_set("include", &self.include, true)?,
            include: glob_set("include", &self.include, false)?,
            exclude: glob_set("exclude", &self.exclude, false)?,
            mask: self
                .mask
                .iter()
                .map(|(p, n)| Ok((glob("mask", p)?, Arc::from("*".repeat(*n).as_str()))))
                .collect::<Result<_, String>>()?,
            hash: glob_set("hash", &self.hash, false)?,
            salt,
            truncate: self
                .truncate
                .iter()
                .map(|(p, n)| Ok((glob("truncate", p)?, *n)))
                .collect::<Result<_, String>>()?,
        })
    }
}

impl ColumnRules {
    pub fn is_empty(&self) -> bool {
        self.handling == ValueHandling::default()
            && self.include.is_none()
            && self.exclude.is_none()
            && self.mask.is_empty()
            && self.hash.is_none()
            && self.truncate.is_empty()
    }

    fn action(&self, table_name: &str, column_name: &str) -> Action {
        if column_name == UNCHANGED_TOAST_COLUMN {
            // Headwater's own bookkeeping (column names only), which sinks rely on
            return Action::Keep;
        }
        let name = format!("{table_name}.{column_name}");
        let matches = |set: &Option<GlobSet>| set.as_ref().is_some_and(|s| s.is_match(&name));
        let left_out = self
            .include_tables
            .as_ref()
            .is_some_and(|tables| tables.is_match(table_name))
            && !matches(&self.include);
        if left_out || matches(&self.exclude) {
            Action::Drop
        } else if let Some((_, mask)) = self.mask.iter().find(|(g, _)| g.is_match(&name)) {
            Action::Mask(Arc::clone(mask))
        } else if matches(&self.hash) {
            Action::Hash
        } else if let Some((_, n)) = self.truncate.iter().find(|(g, _)| g.is_match(&name)) {
            Action::Truncate(*n)
        } else {
            Action::Keep
        }
    }

    /// The plan for `schema`'s columns; `None` when no rule touches the table. A rule that
    /// would change the primary key, or cannot apply to a column's type, is an error naming
    /// the key to change (the table would otherwise leak or lose rows).
    pub fn plan(&self, schema: &TableSchema) -> Result<Option<ColumnPlan>, ConnectorError> {
        if self.is_empty() {
            return Ok(None);
        }
        let table_name = schema.id.to_string();
        let mut actions: Vec<Action> = schema
            .columns
            .iter()
            .map(|c| self.action(&table_name, &c.name))
            .collect();
        for &key in &schema.primary_key {
            let column = &schema.columns[key];
            match &actions[key] {
                Action::Keep => {}
                // `include` lists the payload wanted; the key always comes with it
                Action::Drop if !self.exclude_matches(&table_name, &column.name) => {
                    actions[key] = Action::Keep
                }
                action => {
                    return Err(ConnectorError::definite(format!(
                        "source.columns: primary-key column {table_name}.{} would be {}, but it identifies the table's rows (record keys, the lake's merge); narrow the pattern so it leaves the key alone",
                        column.name,
                        action.name()
                    )))
                }
            }
        }
        let mut columns = Vec::new();
        let mut conversions = Vec::with_capacity(actions.len());
        let mut new_index = vec![usize::MAX; schema.columns.len()];
        for (index, (column, action)) in schema.columns.iter().zip(&actions).enumerate() {
            let mut conversion = None;
            if let Some(mut column) = planned_column(&table_name, column, action)? {
                conversion = self.convert(&mut column.field_type);
                new_index[index] = columns.len();
                columns.push(column);
            }
            conversions.push(conversion);
        }
        if actions.iter().all(|a| *a == Action::Keep) && conversions.iter().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(ColumnPlan {
            source_names: schema.columns.iter().map(|c| c.name.clone()).collect(),
            output: TableSchema {
                id: schema.id.clone(),
                version: schema.version,
                columns,
                primary_key: schema.primary_key.iter().map(|&k| new_index[k]).collect(),
            },
            actions,
            conversions,
            salt: Arc::clone(&self.salt),
        }))
    }

    /// The value handling modes' change of `field_type` (and its array elements'), if any.
    fn convert(&self, field_type: &mut FieldType) -> Option<Conversion> {
        let (conversion, carried) = match (&*field_type, self.handling) {
            (FieldType::Array(_), _) => {
                let FieldType::Array(items) = field_type else {
                    return None;
                };
                return self.convert(items);
            }
            (FieldType::Decimal { scale, .. }, ValueHandling { decimal, .. }) => match decimal {
                DecimalHandling::Precise => return None,
                DecimalHandling::String => (Conversion::DecimalText(*scale), FieldType::String),
                DecimalHandling::Double => (Conversion::DecimalDouble(*scale), FieldType::Double),
            },
            (
                FieldType::DecimalString,
                ValueHandling {
                    decimal: DecimalHandling::Double,
                    ..
                },
            ) => (Conversion::TextDouble, FieldType::Double),
            (FieldType::Bytes, ValueHandling { binary, .. }) => match binary {
                BinaryHandling::Bytes => return None,
                BinaryHandling::Base64 => (Conversion::Base64, FieldType::String),
                BinaryHandling::Hex => (Conversion::Hex, FieldType::String),
            },
            _ => return None,
        };
        *field_type = carried;
        Some(conversion)
    }

    fn exclude_matches(&self, table_name: &str, column_name: &str) -> bool {
        let name = format!("{table_name}.{column_name}");
        self.exclude.as_ref().is_some_and(|s| s.is_match(&name))
    }
}

/// The column as the records carry it, or `None` when excluded.
fn planned_column(
    table_name: &str,
    column: &Column,
    action: &Action,
) -> Result<Option<Column>, ConnectorError> {
    let text_like = matches!(
        column.field_type,
        FieldType::String
            | FieldType::Json
            | FieldType::Enum
            | FieldType::Set
            | FieldType::Uuid
            | FieldType::DecimalString
    );
    let binary = column.field_type == FieldType::Bytes;
    let unsupported = |key: &str, what: &str| {
        ConnectorError::definite(format!(
            "source.columns.{key} matches {table_name}.{} of type {}, but {what}; narrow the pattern, or exclude or mask the column instead",
            column.name, column.sql_type
        ))
    };
    let as_text = |label: &str| Column {
        name: column.name.clone(),
        field_type: FieldType::String,
        nullable: column.nullable,
        sql_type: format!("{} {label}", column.sql_type),
    };
    Ok(match action {
        Action::Keep => Some(column.clone()),
        Action::Drop => None,
        // a mask says nothing of the value, so it fits every type
        Action::Mask(_) => Some(as_text("masked")),
        Action::Hash if text_like || binary => Some(as_text("hashed (sha-256)")),
        Action::Hash => {
            return Err(unsupported(
                "hash",
                "hashing applies to text and binary columns",
            ))
        }
        Action::Truncate(_) if binary || column.field_type == FieldType::String => {
            Some(column.clone())
        }
        // a cut UUID, JSON document or number is no longer one: plain text
        Action::Truncate(_) if text_like => Some(as_text("truncated")),
        Action::Truncate(_) => {
            return Err(unsupported(
                "truncate",
                "truncation applies to text and binary columns",
            ))
        }
    })
}

/// What one table's records carry: the output schema and what to do with each source column.
#[derive(Clone, Debug)]
pub struct ColumnPlan {
    output: TableSchema,
    /// The value handling modes' change per source column (`None`: none).
    conversions: Vec<Option<Conversion>>,
    /// The source's column names, for messages about source columns.
    source_names: Vec<String>,
    actions: Vec<Action>,
    salt: Arc<[u8]>,
}

impl ColumnPlan {
    /// The columns the records carry (the source's version number, until the caller numbers
    /// this layout).
    pub fn output(&self) -> &TableSchema {
        &self.output
    }

    pub fn into_output(self) -> TableSchema {
        self.output
    }

    /// The name of source column `index`.
    pub fn source_name(&self, index: usize) -> &str {
        self.source_names.get(index).map_or("?", String::as_str)
    }

    /// Whether the records carry source column `index`.
    pub fn keeps(&self, index: usize) -> bool {
        self.actions.get(index).is_some_and(|a| *a != Action::Drop)
    }

    /// Turns one row of source column values into the output's, in place. Nulls stay null.
    pub fn apply(&self, values: &mut Vec<Value<'_>>) {
        if values.len() != self.actions.len() {
            // the caller checks the row against the source's columns; an image of another
            // length cannot be planned, and clearing it makes the encoder refuse it
            values.clear();
            return;
        }
        for (value, action) in values.iter_mut().zip(&self.actions) {
            if matches!(value, Value::Null) {
                continue;
            }
            match action {
                Action::Keep | Action::Drop => {}
                Action::Mask(mask) => *value = Value::Text(Cow::Owned(mask.to_string())),
                Action::Hash => *value = Value::Text(Cow::Owned(self.hash(value))),
                Action::Truncate(n) => truncate(value, *n),
            }
        }
        for (value, conversion) in values.iter_mut().zip(&self.conversions) {
            if let Some(conversion) = conversion {
                convert(value, *conversion);
            }
        }
        let mut index = 0;
        values.retain(|_| {
            let keep = self.actions[index] != Action::Drop;
            index += 1;
            keep
        });
    }

    fn hash(&self, value: &Value<'_>) -> String {
        let mut digest = Sha256::new();
        digest.update(&self.salt);
        match value {
            Value::Text(text) => digest.update(text.as_bytes()),
            Value::Bytes(bytes) => digest.update(bytes),
            // the plan allows hashing only text and binary columns
            _ => {}
        }
        hex::encode(digest.finalize())
    }
}

/// A value in the type its value handling mode carries (arrays element by element).
fn convert(value: &mut Value<'_>, conversion: Conversion) {
    use base64::Engine;
    let converted = match (&*value, conversion) {
        (Value::Array(_), _) => {
            if let Value::Array(items) = value {
                items.iter_mut().for_each(|item| convert(item, conversion));
            }
            return;
        }
        (Value::Decimal(unscaled), Conversion::DecimalText(scale)) => {
            Value::Text(Cow::Owned(decimal_text(unscaled, scale)))
        }
        (Value::Decimal(unscaled), Conversion::DecimalDouble(scale)) => {
            Value::Double(decimal_text(unscaled, scale).parse().unwrap_or(f64::NAN))
        }
        // PostgreSQL prints NaN and ±Infinity as Rust reads them
        (Value::Text(text), Conversion::TextDouble) => {
            Value::Double(text.parse().unwrap_or(f64::NAN))
        }
        (Value::Bytes(bytes), Conversion::Base64) => Value::Text(Cow::Owned(
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )),
        (Value::Bytes(bytes), Conversion::Hex) => Value::Text(Cow::Owned(hex::encode(bytes))),
        _ => return,
    };
    *value = converted;
}

fn decimal_text(unscaled: &crate::avro::Unscaled, scale: u32) -> String {
    let mut bytes = [0u8; 33];
    crate::avro_json::decimal_text(unscaled.to_be_bytes(&mut bytes), scale as usize)
}

/// Keeps the first `n` characters of text, or bytes of binary.
fn truncate(value: &mut Value<'_>, n: usize) {
    match value {
        Value::Text(text) => {
            if let Some((cut, _)) = text.char_indices().nth(n) {
                match text {
                    Cow::Borrowed(s) => *s = &s[..cut],
                    Cow::Owned(s) => s.truncate(cut),
                }
            }
        }
        Value::Bytes(bytes) if bytes.len() > n => match bytes {
            Cow::Borrowed(b) => *b = &b[..n],
            Cow::Owned(b) => b.truncate(n),
        },
        _ => {}
    }
}

#[cfg(test)]
#[path = "columns_tests.rs"]
mod tests;
