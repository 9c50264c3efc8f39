//! Flattened records (`envelope = "flat"`), what Debezium's `ExtractNewRecordState` transform
//! makes of the envelope: the row's columns, then chosen metadata as `__`-prefixed fields.
//! Built from the encoded envelope without decoding a value: an Avro record is its fields'
//! encodings one after another, so the row image's bytes are the flat record's first fields.

use crate::avro::{put_long, put_str, put_union_branch};
use crate::envelope::EnvelopeView;
use crate::position::PositionText;
use crate::record::{Op, SinkRecord, StreamSchema};
use crate::ConnectorError;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;

/// `sink.envelope`: the shape of the records.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// Debezium's change event: `before`, `after`, `source`, `op`, … .
    #[default]
    Debezium,
    /// The row's columns plus `sink.flat_fields`.
    Flat,
}

/// A metadata field a flat record carries (`sink.flat_fields`), as `__<name>`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlatField {
    /// `c`, `u`, `d` (with `flat_deletes = "rewrite"`) or `r`.
    Op,
    /// The database (MySQL) or schema (PostgreSQL).
    Db,
    Table,
    /// When the source committed the change, epoch milliseconds.
    SourceTsMs,
    /// The source position just after the change, as `headwater offsets` prints it.
    Position,
    /// The transaction id (GTID, or `txId:LSN`), null for snapshot rows.
    TransactionId,
}

impl FlatField {
    fn name(self) -> &'static str {
        match self {
            FlatField::Op => "__op",
            FlatField::Db => "__db",
            FlatField::Table => "__table",
            FlatField::SourceTsMs => "__source_ts_ms",
            FlatField::Position => "__position",
            FlatField::TransactionId => "__transaction_id",
        }
    }

    fn schema(self) -> Json {
        match self {
            FlatField::SourceTsMs => json!({"name": self.name(), "type": "long"}),
            FlatField::TransactionId => {
                json!({"name": self.name(), "type": ["null", "string"], "default": null})
            }
            _ => json!({"name": self.name(), "type": "string"}),
        }
    }
}

/// `sink.flat_deletes`: what a delete becomes in a flat stream.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlatDeletes {
    /// Kafka only: a record of the key with a null value.
    Tombstone,
    /// The row as it was, with `__deleted = "true"` (every other record has `"false"`).
    Rewrite,
    /// Nothing.
    Drop,
}

/// The metadata a flat record carries when `sink.flat_fields` is not set.
pub fn default_flat_fields() -> Vec<FlatField> {
    vec![FlatField::Op, FlatField::SourceTsMs]
}

/// The flattener a sink's `envelope`, `flat_fields` and `flat_deletes` keys ask for (`None`
/// for Debezium's envelope), or the error naming the key to change. `tombstones` says whether
/// the sink can write a tombstone (Kafka); `default_deletes` applies when `flat_deletes` is
/// not set.
pub fn flattener_for(
    envelope: EnvelopeKind,
    fields: Option<&[FlatField]>,
    deletes: Option<FlatDeletes>,
    default_deletes: FlatDeletes,
    tombstones: bool,
) -> Result<Option<Flattener>, String> {
    if envelope == EnvelopeKind::Debezium {
        if fields.is_some() || deletes.is_some() {
            return Err("sink.flat_fields and sink.flat_deletes shape flat records: set sink.envelope = \"flat\" too, or remove them".into());
        }
        return Ok(None);
    }
    let deletes = deletes.unwrap_or(default_deletes);
    if deletes == FlatDeletes::Tombstone && !tombstones {
        return Err("sink.flat_deletes = \"tombstone\" needs Kafka (a file holds no null records): use \"rewrite\" (the row with __deleted = \"true\") or \"drop\"".into());
    }
    let fields = fields.map_or_else(default_flat_fields, <[FlatField]>::to_vec);
    if let Some(twice) = fields
        .iter()
        .enumerate()
        .find(|(i, f)| fields[..*i].contains(f))
    {
        return Err(format!(
            "sink.flat_fields names {} twice: list each field once",
            twice.1.name()
        ));
    }
    Ok(Some(Flattener::new(fields, deletes)))
}

/// One record after flattening.
#[derive(Debug)]
pub enum Flat {
    /// Write it (its stream is the flat one).
    Record(SinkRecord),
    /// A delete, to be written as a tombstone of its key.
    Tombstone(SinkRecord),
    /// Write nothing, acknowledge it (a dropped delete, a TRUNCATE).
    Dropped(SinkRecord),
}

/// Turns envelope records into flat ones, keeping each flat stream schema per source stream.
pub struct Flattener {
    fields: Vec<FlatField>,
    deletes: FlatDeletes,
    /// Source stream (by address, kept alive here) → its flat stream.
    streams: HashMap<usize, (Arc<StreamSchema>, Arc<StreamSchema>)>,
    position_text: PositionText,
    position_buf: String,
}

impl Flattener {
    pub fn new(fields: Vec<FlatField>, deletes: FlatDeletes) -> Self {
        Flattener {
            fields,
            deletes,
            streams: HashMap::new(),
            position_text: PositionText::default(),
            position_buf: String::new(),
        }
    }

    /// The flat stream of `stream`, or `None` for the schema-change stream (unchanged).
    fn flat_stream(
        &mut self,
        stream: &Arc<StreamSchema>,
    ) -> Result<Option<Arc<StreamSchema>>, ConnectorError> {
        let Some(table) = &stream.table_schema else {
            return Ok(None);
        };
        let address = Arc::as_ptr(stream) as usize;
        if let Some((_, flat)) = self.streams.get(&address) {
            return Ok(Some(Arc::clone(flat)));
        }
        let mut schema = table.row_schema(&stream.server_name);
        let extra: Vec<Json> = self
            .fields
            .iter()
            .map(|f| f.schema())
            .chain(
                (self.deletes == FlatDeletes::Rewrite)
                    .then(|| json!({"name": "__deleted", "type": "string"})),
            )
            .collect();
        let Some(fields) = schema["fields"].as_array_mut() else {
            return Err(ConnectorError::definite(
                "a row schema without fields; report this",
            ));
        };
        for field in &extra {
            if fields.iter().any(|f| f["name"] == field["name"]) {
                return Err(ConnectorError::definite(format!(
                    "table {} has a column {}, which sink.envelope = \"flat\" adds itself; leave it out of sink.flat_fields (or exclude the column with source.columns)",
                    table.id, field["name"]
                )));
            }
        }
        fields.extend(extra);
        let flat = Arc::new(StreamSchema {
            kind: stream.kind,
            server_name: stream.server_name.clone(),
            table: stream.table.clone(),
            version: stream.version,
            table_schema: Some(Arc::clone(table)),
            connector: stream.connector,
            key_schema: stream.key_schema.clone(),
            value_schema: schema.to_string(),
        });
        self.streams
            .insert(address, (Arc::clone(stream), Arc::clone(&flat)));
        Ok(Some(flat))
    }

    /// `record` as its flat stream carries it.
    pub fn apply(&mut self, mut record: SinkRecord) -> Result<Flat, ConnectorError> {
        let Some(flat_stream) = self.flat_stream(&record.stream)? else {
            return Ok(Flat::Record(record));
        };
        let (Some(table), Some(op)) = (&flat_stream.table_schema, record.op) else {
            return Ok(Flat::Record(record));
        };
        let view = EnvelopeView::parse(&record.value, table, flat_stream.connector)
            .map_err(|e| ConnectorError::definite(e.to_string()))?;
        let (image, deleted) = match (op, self.deletes) {
            (Op::Truncate, _) => return Ok(Flat::Dropped(record)),
            (Op::Delete, FlatDeletes::Tombstone) => {
                record.stream = flat_stream;
                return Ok(Flat::Tombstone(record));
            }
            (Op::Delete, FlatDeletes::Drop) => return Ok(Flat::Dropped(record)),
            (Op::Delete, FlatDeletes::Rewrite) => (view.before, true),
            _ => (view.after, false),
        };
        let Some(image) = image else {
            return Ok(Flat::Dropped(record));
        };
        let mut value = Vec::with_capacity(image.len() + 64);
        value.extend_from_slice(image);
        for field in &self.fields {
            match field {
                FlatField::Op => put_str(&mut value, op.code()),
                FlatField::Db => put_str(&mut value, &table.id.namespace),
                FlatField::Table => put_str(&mut value, &table.id.table),
                FlatField::SourceTsMs => put_long(&mut value, view.source_ts_ms),
                FlatField::Position => {
                    self.position_buf.clear();
                    self.position_text
                        .write(&record.position, &mut self.position_buf);
                    put_str(&mut value, &self.position_buf);
                }
                FlatField::TransactionId => match view.transaction_id {
                    Some(id) => {
                        put_union_branch(&mut value, 1);
                        put_str(&mut value, id);
                    }
                    None => put_union_branch(&mut value, 0),
                },
            }
        }
        if self.deletes == FlatDeletes::Rewrite {
            put_str(&mut value, if deleted { "true" } else { "false" });
        }
        record.value = value;
        record.stream = flat_stream;
        Ok(Flat::Record(record))
    }
}

#[cfg(test)]
#[path = "flat_tests.rs"]
mod tests;
