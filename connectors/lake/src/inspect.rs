//! Reads a lake back: per stream, its committed files, record count and latest record. For
//! people (`headwater inspect`), so it favours clarity over speed.

use crate::manifest::{Manifest, MANIFEST_PATH};
use crate::store::{LakeStore, LocalStore};
use apache_avro::schema::{NamesRef, ResolvedSchema, Schema};
use apache_avro::types::Value as AvroValue;
use headwater_contract::ConnectorError;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, serde::Serialize)]
pub struct StreamSummary {
    pub stream: String,
    pub files: usize,
    pub records: u64,
    /// The last record of the stream, as JSON.
    pub latest: Option<serde_json::Value>,
}

#[derive(Debug, serde::Serialize)]
pub struct LakeSummary {
    pub manifest: Option<Manifest>,
    pub streams: Vec<StreamSummary>,
}

fn unreadable(path: &str, err: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::definite(format!("lake file {path} cannot be read as Avro ({err}); it was not written by Headwater or was changed by hand"))
}

/// Summarizes every committed (published) file under `root`.
pub fn summarize(root: &Path) -> Result<LakeSummary, ConnectorError> {
    let store = LocalStore::new(root).map_err(ConnectorError::from)?;
    let manifest = match store.get(MANIFEST_PATH).map_err(ConnectorError::from)? {
        Some(bytes) => {
            Some(serde_json::from_slice(&bytes).map_err(|e| unreadable(MANIFEST_PATH, e))?)
        }
        None => None,
    };
    let mut streams: BTreeMap<String, StreamSummary> = BTreeMap::new();
    for path in store.list().map_err(ConnectorError::from)? {
        let Some((stream, name)) = path.split_once('/') else {
            continue;
        };
        if stream.starts_with('_') || name.starts_with('.') || !name.ends_with(".avro") {
            continue;
        }
        let bytes = store
            .get(&path)
            .map_err(ConnectorError::from)?
            .unwrap_or_default();
        let reader = apache_avro::Reader::new(&bytes[..]).map_err(|e| unreadable(&path, e))?;
        let schema = reader.writer_schema().clone();
        let resolved = ResolvedSchema::try_from(&schema).map_err(|e| unreadable(&path, e))?;
        let summary = streams
            .entry(stream.to_string())
            .or_insert_with(|| StreamSummary {
                stream: stream.to_string(),
                files: 0,
                records: 0,
                latest: None,
            });
        summary.files += 1;
        for value in reader {
            let value = value.map_err(|e| unreadable(&path, e))?;
            summary.records += 1;
            summary.latest = Some(to_json(&value, &schema, resolved.get_names()));
        }
    }
    Ok(LakeSummary {
        manifest,
        streams: streams.into_values().collect(),
    })
}

/// Avro value → JSON for people: decimals as exact text, bytes as hex, unions unwrapped.
fn to_json(value: &AvroValue, schema: &Schema, names: &NamesRef<'_>) -> Json {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    };
    match (value, schema) {
        (AvroValue::Union(branch, inner), Schema::Union(union)) => {
            match union.variants().get(*branch as usize) {
                Some(variant) => to_json(inner, variant, names),
                None => Json::Null,
            }
        }
        (AvroValue::Record(fields), Schema::Record(record)) => Json::Object(
            fields
                .iter()
                .zip(&record.fields)
                .map(|((name, value), field)| (name.clone(), to_json(value, &field.schema, names)))
                .collect(),
        ),
        (AvroValue::Array(items), Schema::Array(array)) => Json::Array(
            items
                .iter()
                .map(|item| to_json(item, &array.items, names))
                .collect(),
        ),
        (AvroValue::Decimal(decimal), Schema::Decimal(decimal_schema)) => {
            let bytes: Vec<u8> = decimal.try_into().unwrap_or_default();
            Json::String(decimal_text(&bytes, decimal_schema.scale))
        }
        (AvroValue::Bytes(bytes), _) => {
            Json::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
        (other, _) => Json::try_from(other.clone()).unwrap_or(Json::Null),
    }
}

/// A big-endian two's-complement unscaled value as decimal text with `scale` fraction digits.
fn decimal_text(bytes: &[u8], scale: usize) -> String {
    let n = num_bigint::BigInt::from_signed_bytes_be(bytes);
    let sign = if n.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    let digits = format!("{:0>width$}", n.magnitude().to_string(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(super::decimal_text(&[0x04, 0xd2], 2), "12.34");
        assert_eq!(super::decimal_text(&[0xff], 3), "-0.001");
        assert_eq!(super::decimal_text(&[0x07], 0), "7");
    }
}
