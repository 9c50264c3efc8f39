//! The SQL catalog in a PostgreSQL database, for a catalog several programs share (Spark or
//! Trino through Java's `JdbcCatalog`, pyiceberg's `SqlCatalog` on `postgresql+psycopg2://…`):
//! the same two tables and the same compare-and-swap as the sqlite catalog.

use headwater_contract::ConnectorError;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

pub struct PostgresCatalog {
    url: String,
    name: String,
    /// Connected on first use (the sink is built before the runtime runs), again after a loss.
    client: Mutex<Option<Client>>,
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
);
ALTER TABLE iceberg_tables ADD COLUMN IF NOT EXISTS iceberg_type VARCHAR(5);";

/// A failed catalog call: a lost or refused connection is retried, a refused statement is not.
fn catalog_error(url: &str, what: &str, err: tokio_postgres::Error) -> ConnectorError {
    // the URL without its password
    let shown = match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        Err(_) => "sink.catalog_url".to_string(),
    };
    let message = format!("iceberg: {what} in the catalog at {shown} failed");
    if err.as_db_error().is_none() {
        ConnectorError::retryable(format!(
            "{message}; the catalog database could not be reached, retrying"
        ))
        .caused_by(err)
    } else {
        ConnectorError::definite(format!(
            "{message}; check that the user of sink.catalog_url may create and write tables in its database"
        ))
        .caused_by(err)
    }
}

impl PostgresCatalog {
    pub fn new(url: String, name: String) -> Self {
        PostgresCatalog {
            url,
            name,
            client: Mutex::new(None),
        }
    }

    pub fn describe(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut parsed) => {
                let _ = parsed.set_password(None);
                parsed.to_string()
            }
            Err(_) => "sink.catalog_url".into(),
        }
    }

    /// The connected client (connecting, and making the catalog tables, when there is none).
    async fn client(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Client>>, ConnectorError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(Client::is_closed) {
            *slot = None;
        }
        if slot.is_none() {
            let what = "connecting";
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| catalog_error(&self.url, what, e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "iceberg: the catalog connection ended");
                }
            });
            client
                .batch_execute(SCHEMA)
                .await
                .map_err(|e| catalog_error(&self.url, "creating the catalog tables", e))?;
            *slot = Some(client);
        }
        Ok(slot)
    }

    pub async fn metadata_location(
        &self,
        namespace: &str,
        table: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or_else(no_client)?;
        let row = client
            .query_opt(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3",
                &[&self.name, &namespace, &table],
            )
            .await
            .map_err(|e| catalog_error(&self.url, "reading a table", e))?;
        Ok(row.and_then(|r| r.get::<_, Option<String>>(0)))
    }

    pub async fn create(
        &self,
        namespace: &str,
        table: &str,
        location: &str,
    ) -> Result<bool, ConnectorError> {
        let mut guard = self.client().await?;
        let client = guard.as_mut().ok_or_else(no_client)?;
        let fail = |e| catalog_error(&self.url, "registering a table", e);
        let tx = client.transaction().await.map_err(fail)?;
        tx.execute(
            "INSERT INTO iceberg_namespace_properties (catalog_name, namespace, property_key, property_value) VALUES ($1, $2, 'exists', 'true') ON CONFLICT DO NOTHING",
            &[&self.name, &namespace],
        )
        .await
        .map_err(fail)?;
        let inserted = tx
            .execute(
                "INSERT INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type) VALUES ($1, $2, $3, $4, NULL, 'TABLE') ON CONFLICT DO NOTHING",
                &[&self.name, &namespace, &table, &location],
            )
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(inserted == 1)
    }

    pub async fn swap(
        &self,
        namespace: &str,
        table: &str,
        old: &str,
        new: &str,
    ) -> Result<bool, ConnectorError> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or_else(no_client)?;
        let changed = client
            .execute(
                "UPDATE iceberg_tables SET metadata_location = $5, previous_metadata_location = $4 WHERE catalog_name = $1 AND table_namespace = $2 AND table_name = $3 AND metadata_location = $4",
                &[&self.name, &namespace, &table, &old, &new],
            )
            .await
            .map_err(|e| catalog_error(&self.url, "committing a table", e))?;
        Ok(changed == 1)
    }

    pub async fn tables(&self) -> Result<Vec<(String, String)>, ConnectorError> {
        let guard = self.client().await?;
        let client = guard.as_ref().ok_or_else(no_client)?;
        let rows = client
            .query(
                "SELECT table_namespace, table_name FROM iceberg_tables WHERE catalog_name = $1 AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) ORDER BY 1, 2",
                &[&self.name],
            )
            .await
            .map_err(|e| catalog_error(&self.url, "listing the tables", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

fn no_client() -> ConnectorError {
    ConnectorError::definite("iceberg: internal error, no catalog connection")
}
