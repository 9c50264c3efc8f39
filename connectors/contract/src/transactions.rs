//! Transaction BEGIN/END records (`pipeline.transaction_events`), Debezium's
//! `provide.transaction.metadata`: one stream per pipeline, keyed by the transaction id.

use crate::avro::{put_long, put_str, put_union_branch};
use crate::schema::avro_name;
use serde_json::{json, Value as Json};

/// The key record: `{id}`.
pub fn key_schema(server_name: &str) -> Json {
    json!({
        "type": "record",
        "name": "TransactionKey",
        "namespace": format!("{}.transaction", avro_name(server_name)),
        "fields": [{"name": "id", "type": "string"}],
    })
}

/// The value record, Debezium's transaction metadata event.
pub fn value_schema(server_name: &str) -> Json {
    json!({
        "type": "record",
        "name": "TransactionValue",
        "namespace": format!("{}.transaction", avro_name(server_name)),
        "fields": [
            {"name": "status", "type": "string", "doc": "BEGIN or END"},
            {"name": "id", "type": "string", "doc": "the transaction id, as in each change's transaction.id"},
            {"name": "event_count", "type": ["null", "long"], "default": null, "doc": "END: the transaction's changes"},
            {"name": "data_collections", "type": ["null", {"type": "array", "items": {
                "type": "record", "name": "DataCollection", "fields": [
                    {"name": "data_collection", "type": "string"},
                    {"name": "event_count", "type": "long"},
                ]}}], "default": null, "doc": "END: the changes per table"},
            {"name": "ts_ms", "type": "long", "doc": "commit time on the source, epoch milliseconds"},
        ],
    })
}

/// What a transaction held, at its end: changes per table (`namespace.table`), in first-seen
/// order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransactionCounts {
    pub per_table: Vec<(String, u64)>,
}

impl TransactionCounts {
    pub fn add(&mut self, table: &str) {
        match self.per_table.iter_mut().find(|(t, _)| t == table) {
            Some((_, count)) => *count += 1,
            None => self.per_table.push((table.to_string(), 1)),
        }
    }

    pub fn total(&self) -> u64 {
        self.per_table.iter().map(|(_, n)| n).sum()
    }
}

pub fn encode_key(id: &str) -> Vec<u8> {
    let mut buf = Vec::with_capacity(id.len() + 2);
    put_str(&mut buf, id);
    buf
}

/// A BEGIN record (`counts` is `None`) or an END record.
pub fn encode_value(id: &str, counts: Option<&TransactionCounts>, ts_ms: i64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    put_str(&mut buf, if counts.is_some() { "END" } else { "BEGIN" });
    put_str(&mut buf, id);
    match counts {
        None => {
            put_union_branch(&mut buf, 0);
            put_union_branch(&mut buf, 0);
        }
        Some(counts) => {
            put_union_branch(&mut buf, 1);
            put_long(&mut buf, counts.total() as i64);
            put_union_branch(&mut buf, 1);
            if !counts.per_table.is_empty() {
                put_long(&mut buf, counts.per_table.len() as i64);
                for (table, count) in &counts.per_table {
                    put_str(&mut buf, table);
                    put_long(&mut buf, *count as i64);
                }
            }
            put_long(&mut buf, 0);
        }
    }
    put_long(&mut buf, ts_ms);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Value;

    #[test]
    fn begin_and_end_records_decode_against_their_schema() {
        let schema = apache_avro::Schema::parse_str(&value_schema("srv").to_string()).unwrap();
        let mut counts = TransactionCounts::default();
        for table in ["db.a", "db.b", "db.a"] {
            counts.add(table);
        }
        let end = encode_value("0-1-9", Some(&counts), 1_700_000_000_000);
        let decoded = apache_avro::from_avro_datum(&schema, &mut &end[..], None).unwrap();
        let Value::Record(fields) = decoded else {
            panic!()
        };
        assert_eq!(fields[0].1, Value::String("END".into()));
        assert_eq!(fields[2].1, Value::Union(1, Box::new(Value::Long(3))));
        let Value::Union(1, collections) = &fields[3].1 else {
            panic!("{:?}", fields[3])
        };
        let Value::Array(items) = collections.as_ref() else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        let begin = encode_value("0-1-9", None, 5);
        let decoded = apache_avro::from_avro_datum(&schema, &mut &begin[..], None).unwrap();
        let Value::Record(fields) = decoded else {
            panic!()
        };
        assert_eq!(fields[0].1, Value::String("BEGIN".into()));
        assert_eq!(fields[4].1, Value::Long(5));
        let key = apache_avro::Schema::parse_str(&key_schema("srv").to_string()).unwrap();
        assert!(apache_avro::from_avro_datum(&key, &mut &encode_key("x")[..], None).is_ok());
    }
}
