//! Delta Lake as the lakehouse sink's table format: a table per directory under `sink.path`
//! (`mirror/<name>/`, `changelog/<name>/`), opened and created by delta-rs.

use crate::config::DeltaConfig;
use crate::error::delta_error;
use crate::table::DeltaTarget;
use deltalake::arrow::datatypes::Schema;
use deltalake::{DeltaTableBuilder, ObjectStore};
use headwater_contract::ConnectorError;
use headwater_lakehouse::sink::{urldecode, urlencode};
use headwater_lakehouse::{TableFormat, TableKind};
use std::collections::HashMap;
use std::sync::Arc;
use url::Url;

pub struct DeltaFormat {
    config: Arc<DeltaConfig>,
    base: Url,
    store: Arc<dyn ObjectStore>,
}

impl DeltaFormat {
    pub fn new(config: DeltaConfig) -> Result<Self, ConnectorError> {
        config.validate().map_err(ConnectorError::definite)?;
        let base = headwater_lakehouse::options::base_url("path", &config.path)?;
        let storage: HashMap<String, String> = config.storage.clone().into_iter().collect();
        let store = DeltaTableBuilder::from_url(base.clone())
            .and_then(|b| b.with_storage_options(storage).build())
            .map_err(|e| delta_error(&format!("opening {base}"), e))?
            .object_store();
        Ok(DeltaFormat {
            config: Arc::new(config),
            base,
            store,
        })
    }

    fn table_url(&self, kind: TableKind, name: &str) -> Result<Url, ConnectorError> {
        self.base
            .join(&format!("{kind}/{}/", urlencode(name)))
            .map_err(|e| {
                ConnectorError::definite(format!("delta: table {name} has no valid location: {e}"))
            })
    }
}

impl TableFormat for DeltaFormat {
    type Target = DeltaTarget;
    const NAME: &'static str = "delta";
    const TITLE: &'static str = "Delta";

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    fn location(&self) -> String {
        self.base.to_string()
    }

    async fn open(
        &self,
        kind: TableKind,
        name: &str,
        schema: &Schema,
        partition_columns: Vec<String>,
        _key_columns: &[String],
    ) -> Result<DeltaTarget, ConnectorError> {
        DeltaTarget::open_or_create(
            self.table_url(kind, name)?,
            format!("{kind} {name}"),
            format!("headwater/{kind}/{name}"),
            schema,
            partition_columns,
            &self.config,
        )
        .await
    }

    async fn existing_tables(&self) -> Result<Vec<(TableKind, String)>, ConnectorError> {
        let mut tables = Vec::new();
        for kind in [TableKind::Mirror, TableKind::Changelog] {
            let listing = self
                .store
                .list_with_delimiter(Some(&deltalake::Path::from(kind.as_str())))
                .await
                .map_err(|e| delta_error("listing the tables", e))?;
            for dir in listing.common_prefixes {
                if let Some(name) = dir.filename().map(urldecode) {
                    tables.push((kind, name));
                }
            }
        }
        Ok(tables)
    }

    fn refuse_name(&self, name: &str) -> Option<String> {
        // the store would read it as directories (`a/b`, or `../x` outside sink.path)
        name.contains(['/', '\\']).then(|| {
            "has a '/' or '\\' in its name, which a Delta table's directory cannot hold".to_string()
        })
    }
}
