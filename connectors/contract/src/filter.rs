//! Which tables a pipeline captures: `include`/`exclude` globs on `namespace.table`.

use crate::columns::{ColumnPlan, ColumnRules};
use crate::schema::TableSchema;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::sync::Arc;

/// Include and exclude globs over `db.table` (MySQL) or `schema.table` (PostgreSQL).
/// A table is captured when it matches an include pattern and no exclude pattern.
#[derive(Clone, Debug)]
pub struct TableFilter {
    include: GlobSet,
    exclude: GlobSet,
    /// The namespace part of each include pattern, for events that name no table (DDL).
    include_namespaces: GlobSet,
    /// Which columns of a captured table its records carry (`source.columns`).
    columns: Arc<ColumnRules>,
}

impl TableFilter {
    /// Builds the filter; a bad pattern is reported with the key it came from.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let namespaces: Vec<String> = include
            .iter()
            .map(|p| {
                p.split_once('.')
                    .map_or(p.as_str(), |(ns, _)| ns)
                    .to_string()
            })
            .collect();
        let mut builder = GlobSetBuilder::new();
        for namespace in &namespaces {
            builder.add(
                Glob::new(namespace)
                    .map_err(|err| format!("source.include pattern `{namespace}`: {err}"))?,
            );
        }
        Ok(TableFilter {
            include: build("source.include", include)?,
            exclude: build("source.exclude", exclude)?,
            include_namespaces: builder
                .build()
                .map_err(|err| format!("source.include patterns could not be compiled: {err}"))?,
            columns: Arc::default(),
        })
    }

    /// The same filter with `source.columns` rules for the columns of captured tables.
    pub fn with_columns(mut self, rules: ColumnRules) -> Self {
        self.columns = Arc::new(rules);
        self
    }

    /// What `schema`'s records carry of its columns; `None` when every column as it is.
    pub fn column_plan(
        &self,
        schema: &TableSchema,
    ) -> Result<Option<ColumnPlan>, crate::ConnectorError> {
        self.columns.plan(schema)
    }

    /// Whether any table of `namespace` may be captured (used for DDL, which names no table).
    pub fn covers_namespace(&self, namespace: &str) -> bool {
        self.include_namespaces.is_match(namespace)
    }

    pub fn captures(&self, namespace: &str, table: &str) -> bool {
        let name = format!("{namespace}.{table}");
        self.include.is_match(&name) && !self.exclude.is_match(&name)
    }

    /// Refuses a backfill of a table the pipeline does not capture; `add_where` names where
    /// to add it besides the filter (the publication, for PostgreSQL).
    pub fn require_captured(
        &self,
        table: &crate::TableId,
        add_where: &str,
    ) -> Result<(), crate::ConnectorError> {
        if self.captures(&table.namespace, &table.table) {
            return Ok(());
        }
        Err(crate::ConnectorError::definite(format!(
            "table {table} is not captured by this pipeline (source.include / source.exclude); add it there{add_where} first"
        )))
    }
}

fn build(key: &str, patterns: &[String]) -> Result<GlobSet, String> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        if !pattern.contains('.') {
            return Err(format!(
                "{key} pattern `{pattern}` has no `.`: write `database.table` globs such as `shop.*` or `shop.orders`"
            ));
        }
        let glob = Glob::new(pattern)
            .map_err(|err| format!("{key} pattern `{pattern}` is not a valid glob: {err}"))?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|err| format!("{key} patterns could not be compiled: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn include_then_exclude() {
        let filter = TableFilter::new(
            &strings(&["shop.*", "crm.customers"]),
            &strings(&["shop.tmp_*"]),
        )
        .unwrap();
        assert!(filter.captures("shop", "orders"));
        assert!(filter.captures("crm", "customers"));
        assert!(!filter.captures("crm", "leads"));
        assert!(!filter.captures("shop", "tmp_import"));
        assert!(!filter.captures("shopping", "orders"));
        assert!(filter.covers_namespace("shop") && filter.covers_namespace("crm"));
        assert!(!filter.covers_namespace("mysql"));
    }

    #[test]
    fn a_pattern_without_a_dot_names_the_key_and_the_fix() {
        let err = TableFilter::new(&strings(&["orders"]), &[]).unwrap_err();
        assert!(
            err.contains("source.include") && err.contains("shop.*"),
            "{err}"
        );
    }
}

/// A connection URL with its password replaced, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("mysql://hw:s3cr@t@127.0.0.1:3306/db"),
            "mysql://hw:***@127.0.0.1:3306/db"
        );
        assert_eq!(redact_url("postgres://hw@h/db"), "postgres://hw@h/db");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
