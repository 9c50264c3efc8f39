//! The DDL statements the source logged, as one more changelog table (`<server>.schema_changes`).

use crate::batch::{self, Lineage};
use crate::format::TableTarget;
use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use headwater_contract::envelope::SchemaChangeView;
use headwater_contract::{ConnectorError, ConnectorKind, Position};
use std::sync::Arc;

/// The schema changes waiting for the next round.
pub struct SchemaChanges {
    lineage: Lineage,
    database: StringBuilder,
    table: StringBuilder,
    ddl: StringBuilder,
    rows: usize,
}

impl Default for SchemaChanges {
    fn default() -> Self {
        SchemaChanges {
            lineage: Lineage::new(16),
            database: StringBuilder::new(),
            table: StringBuilder::new(),
            ddl: StringBuilder::new(),
            rows: 0,
        }
    }
}

impl SchemaChanges {
    fn fields() -> Vec<Field> {
        let mut fields = Lineage::fields();
        fields.push(Field::new("database", DataType::Utf8, true));
        fields.push(Field::new("table", DataType::Utf8, true));
        fields.push(Field::new("ddl", DataType::Utf8, true));
        fields
    }

    pub fn schema() -> Schema {
        Schema::new(Self::fields())
    }

    pub fn append(
        &mut self,
        value: &[u8],
        connector: ConnectorKind,
        position: &str,
    ) -> Result<(), ConnectorError> {
        let view = SchemaChangeView::parse(value, connector).ok_or_else(|| {
            ConnectorError::definite("a schema-change record does not follow its schema")
        })?;
        self.lineage.append(view.source_ts_ms, position);
        self.database.append_value(view.database);
        self.table.append_option(view.table);
        self.ddl.append_value(view.ddl);
        self.rows += 1;
        Ok(())
    }

    pub fn has_pending(&self) -> bool {
        self.rows > 0
    }

    /// The pending rows, taken for a round.
    pub fn take_round(&mut self, label: &str) -> Result<RecordBatch, ConnectorError> {
        self.rows = 0;
        let mut columns: Vec<ArrayRef> = self.lineage.finish();
        columns.push(Arc::new(self.database.finish()));
        columns.push(Arc::new(self.table.finish()));
        columns.push(Arc::new(self.ddl.finish()));
        batch::batch(Self::fields(), columns, label)
    }
}

/// Appends one round's schema changes to `target`.
pub async fn commit<T: TableTarget>(
    target: &mut T,
    rows: RecordBatch,
    round: i64,
    through: &Position,
) -> Result<(), ConnectorError> {
    crate::format::append(target, [rows], round, through).await
}
