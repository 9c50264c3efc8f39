use headwater_lakehouse::options::validate_location;
use serde::Deserialize;

headwater_lakehouse::table_sink_config! {
    /// `[sink] kind = "iceberg"`: every captured table as Apache Iceberg v2 tables — a current-state
    /// mirror and a changelog — registered in a SQL catalog and committed exactly once with the
    /// source position, on local disk or S3.
    pub struct IcebergConfig {
        /// Where the tables' data and metadata live: a local directory (created if missing) or
        /// `s3://bucket/prefix`.
        pub warehouse: String,
        /// The catalog the tables are registered in, in the SQL catalog's tables that
        /// pyiceberg's `SqlCatalog` and Java's `JdbcCatalog` read: `"sqlite"` (a file, nothing
        /// to run: the default) or `"postgres"` (a database at `catalog_url`, to share).
        #[serde(default)]
        pub catalog: CatalogKind,
        /// The PostgreSQL database of a `"postgres"` catalog: `postgres://user:password@host/db`.
        #[serde(default)]
        pub catalog_url: Option<String>,
        /// The sqlite file of the catalog; default `<warehouse>/catalog.db` for a local warehouse
        /// (an S3 warehouse needs it set: sqlite needs a local file).
        #[serde(default)]
        pub catalog_path: Option<String>,
        /// The catalog's name (the SQL catalog's `catalog_name` column), as readers name it.
        #[serde(default = "default_catalog_name")]
        pub catalog_name: String,
        /// The namespace of a source table's tables: `{kind}` (mirror or changelog), `{server}`
        /// and `{database}` are replaced; dots separate levels. The table keeps the source
        /// table's name.
        #[serde(default = "default_namespace")]
        pub namespace: String,
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    #[default]
    Sqlite,
    Postgres,
}

fn default_catalog_name() -> String {
    "headwater".into()
}

fn default_namespace() -> String {
    "{kind}.{server}.{database}".into()
}

impl IcebergConfig {
    /// Checks the values alone, before anything is touched.
    pub fn validate(&self) -> Result<(), String> {
        validate_location("warehouse", &self.warehouse)?;
        if !self.namespace.contains("{kind}") {
            return Err(format!(
                "sink.namespace = {:?} has no {{kind}}: a table's mirror and changelog would share one name; e.g. namespace = \"{{kind}}.{{server}}.{{database}}\"",
                self.namespace
            ));
        }
        match (self.catalog, &self.catalog_url) {
            (CatalogKind::Postgres, None) => {
                return Err("sink.catalog = \"postgres\" needs sink.catalog_url, e.g. catalog_url = \"postgres://iceberg:secret@db.example/catalog\"".into())
            }
            (CatalogKind::Postgres, Some(url)) if !url.starts_with("postgres://") && !url.starts_with("postgresql://") => {
                return Err(format!("sink.catalog_url = {url:?} is not a postgres:// URL"))
            }
            (CatalogKind::Sqlite, Some(_)) => {
                return Err("sink.catalog_url is for catalog = \"postgres\"; a sqlite catalog takes sink.catalog_path".into())
            }
            _ => {}
        }
        if self.catalog == CatalogKind::Sqlite
            && self.catalog_path.is_none()
            && self.warehouse.starts_with("s3://")
        {
            return Err(format!(
                "sink.warehouse = {:?} is on S3 but the sqlite catalog needs a local file: set sink.catalog_path, e.g. catalog_path = \"./catalog.db\"",
                self.warehouse
            ));
        }
        if self.catalog_name.trim().is_empty() {
            return Err(
                "sink.catalog_name is empty: name the catalog, e.g. catalog_name = \"headwater\""
                    .into(),
            );
        }
        self.options().validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IcebergConfig, String> {
        let config: IcebergConfig = toml_like(text)?;
        config.validate().map(|()| config)
    }

    /// The sink section as the binary hands it over (a TOML table), here from JSON.
    fn toml_like(text: &str) -> Result<IcebergConfig, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let config = parse(r#"{"warehouse": "/tmp/wh"}"#).unwrap();
        assert_eq!(config.namespace, "{kind}.{server}.{database}");
        assert_eq!(config.catalog_name, "headwater");
        assert_eq!(
            config.options().commit_interval,
            std::time::Duration::from_secs(10)
        );
        let no_kind = parse(r#"{"warehouse": "/tmp/wh", "namespace": "{server}"}"#).unwrap_err();
        assert!(
            no_kind.contains("sink.namespace") && no_kind.contains("{kind}"),
            "{no_kind}"
        );
        let s3 = parse(r#"{"warehouse": "s3://bucket/wh"}"#).unwrap_err();
        assert!(s3.contains("sink.catalog_path"), "{s3}");
        assert!(parse(r#"{"warehouse": "s3://bucket/wh", "catalog_path": "/tmp/c.db"}"#).is_ok());
        let unknown = toml_like(r#"{"warehouse": "/tmp/wh", "comit_interval": "1s"}"#).unwrap_err();
        assert!(unknown.contains("comit_interval"), "{unknown}");
        let bad = parse(r#"{"warehouse": "gs://bucket/wh"}"#).unwrap_err();
        assert!(bad.contains("sink.warehouse"), "{bad}");
    }
}
