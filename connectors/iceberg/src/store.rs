//! Where the warehouse is: its object store (a local directory or S3, with the same settings as
//! the Delta sink's), and the absolute URIs Iceberg metadata names files by.

use headwater_contract::ConnectorError;
use headwater_lakehouse::error::lake_error;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

pub struct Warehouse {
    /// The warehouse as a URL with a trailing slash: `file:///…/` or `s3://bucket/prefix/`.
    pub base: Url,
    /// Paths relative to `base`.
    pub store: Arc<dyn ObjectStore>,
}

impl Warehouse {
    pub fn open(
        location: &str,
        storage: &BTreeMap<String, String>,
    ) -> Result<Self, ConnectorError> {
        let base = headwater_lakehouse::options::base_url("warehouse", location)?;
        let store: Arc<dyn ObjectStore> = match base.scheme() {
            "s3" => {
                let mut builder = AmazonS3Builder::from_env().with_url(base.as_str());
                for (key, value) in storage {
                    let parsed = key.parse::<AmazonS3ConfigKey>().map_err(|e| {
                        ConnectorError::definite(format!(
                            "sink.storage.{key} is not an S3 setting ({e}); use e.g. endpoint, region, allow_http, access_key_id, secret_access_key"
                        ))
                    })?;
                    builder = builder.with_config(parsed, value);
                }
                let s3 = builder
                    .build()
                    .map_err(|e| lake_error(&format!("iceberg: opening the warehouse {base}"), e))?;
                let prefix = base.path().trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            "file" => {
                let dir = base.to_file_path().map_err(|()| {
                    ConnectorError::definite(format!(
                        "sink.warehouse = {location:?} is not a local directory"
                    ))
                })?;
                let local = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| lake_error(&format!("iceberg: opening the warehouse {base}"), e))?;
                Arc::new(local.with_automatic_cleanup(true))
            }
            other => {
                return Err(ConnectorError::definite(format!(
                    "sink.warehouse = {location:?}: {other}:// is not supported; use a directory or s3://bucket/prefix"
                )))
            }
        };
        Ok(Warehouse { base, store })
    }

    /// The absolute URI of `path`, as Iceberg metadata names it.
    pub fn uri(&self, path: &Path) -> String {
        format!("{}{}", self.base, path)
    }

    /// The store path of an absolute URI this warehouse holds.
    pub fn path_of(&self, uri: &str) -> Result<Path, ConnectorError> {
        let relative = uri.strip_prefix(self.base.as_str()).ok_or_else(|| {
            ConnectorError::definite(format!(
                "iceberg: the table names the file {uri}, outside the warehouse {}; the table was changed by another writer — point the sink at a new warehouse and catalog",
                self.base
            ))
        })?;
        Ok(Path::from(relative))
    }
}

/// A name as a directory name: letters, digits, `.`, `_` and `-` are kept, anything else
/// becomes `_`, and a name that changed gets a short hash of itself so two names stay apart.
pub fn directory_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe == name && name != "." && name != ".." && !name.is_empty() {
        return safe;
    }
    // FNV-1a: stable across runs and builds (the std hasher is not)
    let mut hash: u32 = 0x811c_9dc5;
    for byte in name.bytes() {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{safe}-{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_names_are_safe_and_kept_apart() {
        assert_eq!(directory_name("orders"), "orders");
        assert_eq!(directory_name("schema_changes"), "schema_changes");
        let spaced = directory_name("my table");
        assert!(spaced.starts_with("my_table-"), "{spaced}");
        assert_ne!(spaced, directory_name("my_table"));
        assert_ne!(directory_name("a/b"), directory_name("a\\b"));
        assert!(!directory_name("..").contains('/'));
        assert_ne!(directory_name(".."), "..");
    }
}
