//! Each table's schema versions, kept beside the checkpoint so that version numbers stay stable
//! across restarts (a restart re-reading old events finds the version they were written under).

use crate::{ConnectorError, TableSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    version: u32,
    /// `db.table` → fingerprints of its column layouts, index = schema version - 1.
    tables: BTreeMap<String, Vec<String>>,
}

pub struct SchemaHistory {
    /// `None`: kept in memory only (fuzzing and tests drive decoders without a state dir).
    path: Option<PathBuf>,
    file: HistoryFile,
}

/// Everything about a table's columns that changes its Avro schema.
pub fn fingerprint(schema: &TableSchema) -> String {
    let mut out = String::new();
    for (i, c) in schema.columns.iter().enumerate() {
        let key = if schema.primary_key.contains(&i) {
            " key"
        } else {
            ""
        };
        let null = if c.nullable { " null" } else { "" };
        out.push_str(&format!(
            "{} {:?} {}{null}{key};",
            c.name, c.field_type, c.sql_type
        ));
    }
    out
}

fn io_error(path: &Path, err: std::io::Error) -> ConnectorError {
    ConnectorError::definite(format!(
        "schema history {}: {err}; check that state.path is writable",
        path.display()
    ))
}

impl SchemaHistory {
    /// Opens `state_dir/<file_name>`, e.g. `mysql-schema-history.json`.
    pub fn open(state_dir: &Path, file_name: &str) -> Result<Self, ConnectorError> {
        let path = state_dir.join(file_name);
        let file = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                ConnectorError::definite(format!(
                    "schema history {} is unreadable ({err}); restore it from a backup, or delete it to renumber schema versions from 1",
                    path.display()
                ))
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => HistoryFile { version: 1, ..Default::default() },
            Err(err) => return Err(io_error(&path, err)),
        };
        Ok(SchemaHistory {
            path: Some(path),
            file,
        })
    }

    /// A history that is not kept on disk: version numbers last as long as the value.
    pub fn in_memory() -> Self {
        SchemaHistory {
            path: None,
            file: HistoryFile {
                version: 1,
                ..Default::default()
            },
        }
    }

    /// How many schema versions of `table` (`namespace.table`) are known.
    pub fn known_versions(&self, table: &str) -> u32 {
        self.file.tables.get(table).map_or(0, |v| v.len() as u32)
    }

    /// The version number of `schema`'s column layout: an existing one when it was seen
    /// before, else the next number, recorded durably before it is used.
    pub fn version_of(&mut self, schema: &TableSchema) -> Result<u32, ConnectorError> {
        let print = fingerprint(schema);
        let versions = self.file.tables.entry(schema.id.to_string()).or_default();
        if let Some(index) = versions.iter().rposition(|p| *p == print) {
            return Ok(index as u32 + 1);
        }
        versions.push(print);
        let version = versions.len() as u32;
        self.save()?;
        Ok(version)
    }

    fn save(&self) -> Result<(), ConnectorError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(|e| {
            ConnectorError::definite(format!("encoding the schema history failed: {e}"))
        })?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io_error(path, e))?;
        }
        let temp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            fs::rename(&temp, path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| io_error(path, e))
    }
}
