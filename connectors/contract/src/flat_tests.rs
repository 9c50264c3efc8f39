use super::*;
use crate::avro::{RowEncoder, Value};
use crate::position::{Lsn, PgPosition, Position};
use crate::record::{encode_envelope, ChangeRecord, PgSourceInfo, SnapshotMarker, SourceInfo};
use crate::schema::{Column, ConnectorKind, FieldType, TableId, TableSchema};
use apache_avro::types::Value as AvroValue;
use std::borrow::Cow;

fn table() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        id: TableId {
            namespace: "public".into(),
            table: "orders".into(),
        },
        version: 1,
        columns: vec![
            Column {
                name: "id".into(),
                field_type: FieldType::Long,
                nullable: false,
                sql_type: "bigint".into(),
            },
            Column {
                name: "item".into(),
                field_type: FieldType::String,
                nullable: true,
                sql_type: "text".into(),
            },
        ],
        primary_key: vec![0],
    })
}

fn record(stream: &Arc<StreamSchema>, op: Op, item: &str) -> SinkRecord {
    let table = table();
    let image =
        RowEncoder::row_bytes(&table, &[Value::Long(7), Value::Text(Cow::Borrowed(item))]).unwrap();
    let (before, after) = match op {
        Op::Delete => (Some(image), None),
        _ => (None, Some(image)),
    };
    let change = ChangeRecord {
        table: Arc::clone(&table),
        op,
        key: None,
        before,
        after,
        source: SourceInfo::Postgres(PgSourceInfo {
            ts_us: 1_700_000_000_123_000,
            snapshot: SnapshotMarker::False,
            db: "shop".into(),
            schema: "public".into(),
            table: Some("orders".into()),
            tx_id: Some(5),
            lsn: Some(99),
            last_commit_lsn: None,
        }),
        transaction: None,
        position: Position::Postgres(PgPosition::at(Lsn(99), 1)),
    };
    let mut value = Vec::new();
    encode_envelope(&change, "shop", 1, &mut value);
    SinkRecord {
        seq: 1,
        stream: Arc::clone(stream),
        op: Some(op),
        key: None,
        value,
        position: change.position,
    }
}

fn decode(flat: &SinkRecord) -> Vec<(String, AvroValue)> {
    let schema = apache_avro::Schema::parse_str(&flat.stream.value_schema).unwrap();
    match apache_avro::from_avro_datum(&schema, &mut &flat.value[..], None).unwrap() {
        AvroValue::Record(fields) => fields,
        other => panic!("{other:?}"),
    }
}

#[test]
fn flat_records_are_the_row_then_the_chosen_metadata_and_deletes_follow_the_mode() {
    let stream = Arc::new(StreamSchema::for_table(
        "shop",
        &table(),
        ConnectorKind::Postgres,
    ));
    let mut flattener = Flattener::new(
        vec![
            FlatField::Op,
            FlatField::Table,
            FlatField::SourceTsMs,
            FlatField::Position,
        ],
        FlatDeletes::Rewrite,
    );
    let Flat::Record(flat) = flattener.apply(record(&stream, Op::Update, "pen")).unwrap() else {
        panic!("a record")
    };
    let position = flat.position.to_string();
    assert_eq!(
        decode(&flat),
        [
            ("id".to_string(), AvroValue::Long(7)),
            (
                "item".to_string(),
                AvroValue::Union(1, Box::new(AvroValue::String("pen".into())))
            ),
            ("__op".to_string(), AvroValue::String("u".into())),
            ("__table".to_string(), AvroValue::String("orders".into())),
            (
                "__source_ts_ms".to_string(),
                AvroValue::Long(1_700_000_000_123)
            ),
            ("__position".to_string(), AvroValue::String(position)),
            ("__deleted".to_string(), AvroValue::String("false".into())),
        ]
    );
    let Flat::Record(deleted) = flattener.apply(record(&stream, Op::Delete, "pen")).unwrap() else {
        panic!("a rewritten delete")
    };
    let fields = decode(&deleted);
    assert_eq!(fields[2].1, AvroValue::String("d".into()));
    assert_eq!(fields[6].1, AvroValue::String("true".into()));
    assert!(
        Arc::ptr_eq(&flat.stream, &deleted.stream),
        "one flat stream per source stream"
    );

    for (deletes, tombstone) in [(FlatDeletes::Tombstone, true), (FlatDeletes::Drop, false)] {
        let mut flattener = Flattener::new(vec![], deletes);
        match flattener.apply(record(&stream, Op::Delete, "x")).unwrap() {
            Flat::Tombstone(_) => assert!(tombstone),
            Flat::Dropped(_) => assert!(!tombstone),
            Flat::Record(_) => panic!("a delete is no record in {deletes:?}"),
        }
        let Flat::Record(plain) = flattener.apply(record(&stream, Op::Create, "x")).unwrap() else {
            panic!("a record")
        };
        assert_eq!(decode(&plain).len(), 2, "just the row");
    }
}

#[test]
fn a_column_named_like_a_flat_field_is_an_error_naming_the_way_out() {
    let mut table = (*table()).clone();
    table.columns[1].name = "__op".into();
    let stream = Arc::new(StreamSchema::for_table(
        "shop",
        &Arc::new(table),
        ConnectorKind::Postgres,
    ));
    let mut flattener = Flattener::new(vec![FlatField::Op], FlatDeletes::Rewrite);
    let err = flattener
        .apply(SinkRecord {
            seq: 1,
            stream,
            op: Some(Op::Create),
            key: None,
            value: Vec::new(),
            position: Position::Postgres(PgPosition::at(Lsn(1), 0)),
        })
        .unwrap_err();
    assert!(err.to_string().contains("sink.flat_fields"), "{err}");
}
