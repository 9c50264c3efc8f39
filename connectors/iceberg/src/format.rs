//! Apache Iceberg as the lakehouse sink's table format: tables registered in the SQL catalog
//! under the namespace template, their files in the warehouse (`<namespace>/<table>/data`,
//! `…/metadata`).

use crate::catalog::{Catalog, SqliteCatalog};
use crate::catalog_postgres::PostgresCatalog;
use crate::config::CatalogKind;
use crate::config::IcebergConfig;
use crate::store::{directory_name, Warehouse};
use crate::table::{IcebergTarget, NewTable};
use arrow::datatypes::Schema;
use headwater_contract::ConnectorError;
use headwater_lakehouse::files::ParquetSettings;
use headwater_lakehouse::options::ParquetEncodings;
use headwater_lakehouse::{TableFormat, TableKind};
use object_store::ObjectStore;
use std::sync::Arc;

pub struct IcebergFormat {
    config: Arc<IcebergConfig>,
    warehouse: Arc<Warehouse>,
    catalog: Arc<Catalog>,
    parquet: ParquetSettings,
}

impl IcebergFormat {
    pub fn open(config: IcebergConfig) -> Result<Self, ConnectorError> {
        config.validate().map_err(ConnectorError::definite)?;
        let warehouse = Warehouse::open(&config.warehouse, &config.storage)?;
        let catalog = match config.catalog {
            CatalogKind::Sqlite => {
                let path = match &config.catalog_path {
                    Some(path) => std::path::PathBuf::from(path),
                    None => warehouse
                        .base
                        .to_file_path()
                        .map_err(|()| {
                            ConnectorError::definite(
                                "sink.catalog_path is needed for a warehouse that is not a local directory",
                            )
                        })?
                        .join("catalog.db"),
                };
                Catalog::Sqlite(SqliteCatalog::open(path, config.catalog_name.clone())?)
            }
            CatalogKind::Postgres => {
                let url = config.catalog_url.clone().ok_or_else(|| {
                    ConnectorError::definite("sink.catalog = \"postgres\" needs sink.catalog_url")
                })?;
                Catalog::Postgres(PostgresCatalog::new(url, config.catalog_name.clone()))
            }
        };
        let parquet = ParquetSettings::new(
            config.compression,
            // Iceberg's vectorized Spark reader refuses DELTA_BYTE_ARRAY before 1.11
            config.parquet_encodings.unwrap_or(ParquetEncodings::Plain),
        );
        Ok(IcebergFormat {
            config: Arc::new(config),
            warehouse: Arc::new(warehouse),
            catalog: Arc::new(catalog),
            parquet,
        })
    }

    /// The namespace of source table `name`'s `kind` table, and the table's own name.
    fn identifier(&self, kind: TableKind, name: &str) -> (String, String) {
        // `<server>.<database…>.<table>`; a schema-changes stream is `<server>.schema_changes`
        let mut parts: Vec<&str> = name.split('.').collect();
        let table = parts.pop().unwrap_or(name).to_string();
        let server = if parts.is_empty() {
            ""
        } else {
            parts.remove(0)
        };
        let database = parts.join("_");
        let namespace = self
            .config
            .namespace
            .replace("{kind}", kind.as_str())
            .replace("{server}", server)
            .replace("{database}", &database);
        let namespace: Vec<&str> = namespace.split('.').filter(|p| !p.is_empty()).collect();
        (namespace.join("."), table)
    }
}

impl TableFormat for IcebergFormat {
    type Target = IcebergTarget;
    const NAME: &'static str = "iceberg";
    const TITLE: &'static str = "Iceberg";

    fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.warehouse.store)
    }

    fn location(&self) -> String {
        self.warehouse.base.to_string()
    }

    async fn open(
        &self,
        kind: TableKind,
        name: &str,
        schema: &Schema,
        partition_columns: Vec<String>,
        key_columns: &[String],
    ) -> Result<IcebergTarget, ConnectorError> {
        let (namespace, table) = self.identifier(kind, name);
        let mut dir: Vec<String> = namespace.split('.').map(directory_name).collect();
        dir.push(directory_name(&table));
        let fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        IcebergTarget::open_or_create(
            Arc::clone(&self.catalog),
            Arc::clone(&self.warehouse),
            NewTable {
                label: format!("{kind} {name}"),
                namespace,
                name: table,
                dir: dir.join("/"),
                fields: &fields,
                partition_column: partition_columns.first().map(String::as_str),
                key_columns,
            },
            self.parquet.clone(),
            self.config.target_file_size,
        )
        .await
    }

    async fn existing_tables(&self) -> Result<Vec<(TableKind, String)>, ConnectorError> {
        // the catalog knows tables by namespace and name; the sink by kind and source name,
        // so each registered table is matched to the name it was made from
        let registered = self.catalog.tables().await?;
        let mut found = Vec::new();
        for (namespace, table) in registered {
            for kind in [TableKind::Mirror, TableKind::Changelog] {
                if let Some(name) = self.source_name(kind, &namespace, &table) {
                    found.push((kind, name));
                }
            }
        }
        Ok(found)
    }

    fn refuse_name(&self, _name: &str) -> Option<String> {
        None
    }
}

impl IcebergFormat {
    /// The source table name whose `kind` table is `namespace`.`table`, when the namespace
    /// template made it.
    fn source_name(&self, kind: TableKind, namespace: &str, table: &str) -> Option<String> {
        let mut template: Vec<&str> = self.config.namespace.split('.').collect();
        let levels: Vec<&str> = namespace.split('.').collect();
        if template.len() == levels.len() + 1 {
            // a stream of the server's own (`<server>.schema_changes`) has no database level
            template.retain(|p| *p != "{database}");
        }
        if template.len() != levels.len() {
            return None;
        }
        let (mut server, mut database) = (None, None);
        for (pattern, level) in template.iter().zip(&levels) {
            match *pattern {
                "{kind}" if *level == kind.as_str() => {}
                "{server}" => server = Some(*level),
                "{database}" => database = Some(*level),
                literal if literal == *level && !literal.contains('{') => {}
                _ => return None,
            }
        }
        let name = [server, database, Some(table)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(".");
        // made from this name again, it must give this identifier
        (self.identifier(kind, &name) == (namespace.to_string(), table.to_string())).then_some(name)
    }
}
