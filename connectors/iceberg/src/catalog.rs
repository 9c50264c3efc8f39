//! The SQL catalog on a sqlite file: the `iceberg_tables` and `iceberg_namespace_properties`
//! tables of Java's `JdbcCatalog` and pyiceberg's `SqlCatalog`, so either reads what Headwater
//! registers. A commit is a compare-and-swap of a table's metadata location, the catalog's
//! whole concurrency contract: a writer that lost the race changes nothing.

use headwater_contract::ConnectorError;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::PathBuf;
use std::time::Duration;

/// The catalog the sink registers and commits its tables in.
pub enum Catalog {
    Sqlite(SqliteCatalog),
    Postgres(crate::catalog_postgres::PostgresCatalog),
}

impl Catalog {
    pub fn describe(&self) -> String {
        match self {
            Catalog::Sqlite(c) => c.describe(),
            Catalog::Postgres(c) => c.describe(),
        }
    }

    /// The current metadata location of `namespace`.`table`, if it is registered.
    pub async fn metadata_location(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<Option<String>, ConnectorError> {
        match self {
            Catalog::Sqlite(c) => c.metadata_location(namespace, table).await,
            Catalog::Postgres(c) => c.metadata_location(namespace, table).await,
        }
    }

    /// Registers a new table (and its namespace); `false` when another writer registered it
    /// first.
    pub async fn create(
        &self,
        namespace: &str,
        table: &str,
        location: &str,
    ) -> Result<bool, ConnectorError> {
        match self {
            Catalog::Sqlite(c) => c.create(namespace, table, location).await,
            Catalog::Postgres(c) => c.create(namespace, table, location).await,
        }
    }

    /// Points the table at `new` if it still points at `old`; `false` if it does not (another
    /// writer committed in between).
    pub async fn swap(
        &self,
        namespace: &str,
        table: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, ConnectorError> {
        match self {
            Catalog::Sqlite(c) => c.swap(namespace, table, old, new).await,
            Catalog::Postgres(c) => c.swap(namespace, table, old, new).await,
        }
    }

    /// Every table of the catalog, as (namespace, table).
    pub async fn tables(&self) -> Result<Vec<(String, String)>, ConnectorError> {
        match self {
            Catalog::Sqlite(c) => c.tables().await,
            Catalog::Postgres(c) => c.tables().await,
        }
    }
}

pub struct SqliteCatalog {
    path: PathBuf,
    name: String,
}

/// `what` on the catalog file failed: a locked file is retried, anything else is not.
fn catalog_error(path: &std::path::Path, what: &str, err: rusqlite::Error) -> ConnectorError {
    let busy = matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let message = format!("iceberg: {what} in the catalog {} failed", path.display());
    if busy {
        ConnectorError::retryable(format!(
            "{message}; another program holds the file locked, retrying"
        ))
        .caused_by(err)
    } else {
        ConnectorError::definite(format!(
            "{message}; check that sink.catalog_path is a sqlite file this user can write"
        ))
        .caused_by(err)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS iceberg_tables (
    catalog_name VARCHAR(255) NOT NULL,
    table_namespace VARCHAR(255) NOT NULL,
    table_name VARCHAR(255) NOT NULL,
    metadata_location VARCHAR(1000),
    previous_metadata_location VARCHAR(1000),
    iceberg_type VARCHAR(5),
    PRIMARY KEY (catalog_name, table_namespace, table_name)
);
CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
    catalog_name VARCHAR(255) NOT NULL,
    namespace VARCHAR(255) NOT NULL,
    property_key VARCHAR(255) NOT NULL,
    property_value VARCHAR(1000) NOT NULL,
    PRIMARY KEY (catalog_name, namespace, property_key)
);";

impl SqliteCatalog {
    /// Opens the catalog at `path`, creating the file and its tables when missing (once, at
    /// start: the pipeline's runtime is not running yet).
    pub fn open(path: PathBuf, name: String) -> Result<Self, ConnectorError> {
        let what = "creating the catalog tables";
        let fail = |e| catalog_error(&path, what, e);
        let connection = Connection::open(&path).map_err(fail)?;
        connection
            .busy_timeout(Duration::from_secs(10))
            .map_err(fail)?;
        connection.execute_batch(SCHEMA).map_err(fail)?;
        // a table made by an older JdbcCatalog or pyiceberg has no iceberg_type
        let has_type = connection
            .prepare("SELECT iceberg_type FROM iceberg_tables LIMIT 0")
            .is_ok();
        if !has_type {
            connection
                .execute_batch("ALTER TABLE iceberg_tables ADD COLUMN iceberg_type VARCHAR(5)")
                .map_err(fail)?;
        }
        Ok(SqliteCatalog { path, name })
    }

    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    async fn run<T, F>(&self, what: &str, work: F) -> Result<T, ConnectorError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &str) -> rusqlite::Result<T> + Send + 'static,
    {
        let (path, name, what) = (self.path.clone(), self.name.clone(), what.to_string());
        let joined = tokio::task::spawn_blocking(move || {
            let mut connection =
                Connection::open(&path).map_err(|e| catalog_error(&path, &what, e))?;
            connection
                .busy_timeout(Duration::from_secs(10))
                .map_err(|e| catalog_error(&path, &what, e))?;
            work(&mut connection, &name).map_err(|e| catalog_error(&path, &what, e))
        })
        .await;
        joined.map_err(|e| {
            ConnectorError::definite(format!("iceberg: the catalog call stopped ({e})"))
        })?
    }

    /// The current metadata location of `namespace`.`table`, if it is registered.
    pub async fn metadata_location(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let (namespace, table) = (namespace.to_string(), table.to_string());
        self.run("reading a table", move |c, catalog| {
            c.query_row(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![catalog, namespace, table],
                |row| row.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
        .await
    }

    /// Registers a new table (and its namespace); `false` when another writer registered it
    /// first.
    pub async fn create(
        &self,
        namespace: &str,
        table: &str,
        location: &str,
    ) -> Result<bool, ConnectorError> {
        let (namespace, table, location) = (
            namespace.to_string(),
            table.to_string(),
            location.to_string(),
        );
        self.run("registering a table", move |c, catalog| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR IGNORE INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES (?1, ?2, 'exists', 'true')",
                params![catalog, namespace],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')",
                params![catalog, namespace, table, location],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }

    /// Points the table at `new` if it still points at `old`; `false` if it does not (another
    /// writer committed in between).
    pub async fn swap(
        &self,
        namespace: &str,
        table: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, ConnectorError> {
        let (namespace, table, old, new) = (
            namespace.to_string(),
            table.to_string(),
            old.to_string(),
            new.to_string(),
        );
        self.run("committing a table", move |c, catalog| {
            let changed = c.execute(
                "UPDATE iceberg_tables SET metadata_location = ?5, previous_metadata_location = ?4 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3 AND metadata_location = ?4",
                params![catalog, namespace, table, old, new],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Every table of the catalog, as (namespace, table).
    pub async fn tables(&self) -> Result<Vec<(String, String)>, ConnectorError> {
        self.run("listing the tables", |c, catalog| {
            let mut statement = c.prepare(
                "SELECT table_namespace, table_name FROM iceberg_tables WHERE catalog_name = ?1 AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) ORDER BY 1, 2",
            )?;
            let rows = statement.query_map(params![catalog], |row| Ok((row.get(0)?, row.get(1)?)))?;
            rows.collect()
        })
        .await
    }
}
