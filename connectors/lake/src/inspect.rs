//! Reads a lake back: per stream, its committed files, record count and latest record. For
//! people (`headwater inspect`), so it favours clarity over speed.

use crate::manifest::{Manifest, MANIFEST_PATH};
use crate::store::{LakeStore, LocalStore};
use apache_avro::schema::ResolvedSchema;
use headwater_contract::avro_json::to_json;
use headwater_contract::ConnectorError;
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
