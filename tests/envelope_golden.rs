//! The change envelope against golden files in `schemas/golden/`: the schema Headwater builds
//! from the `.avsc` parts, and records it encodes, decoded by an independent reader (fastavro).

use headwater_contract::avro::{RowEncoder, Unscaled, Value};
use headwater_contract::record::encode_envelope;
use headwater_contract::{
    BinlogPosition, ChangeRecord, Column, ConnectorKind, FieldType, Lsn, MysqlFlavor,
    MysqlSourceInfo, Op, PgPosition, PgSourceInfo, Position, SnapshotMarker, SourceInfo, TableId,
    TableSchema, TransactionInfo,
};
use headwater_lake::ocf::ContainerWriter;
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/golden")
}

fn column(name: &str, field_type: FieldType, nullable: bool, sql_type: &str) -> Column {
    Column {
        name: name.into(),
        field_type,
        nullable,
        sql_type: sql_type.into(),
    }
}

fn products() -> TableSchema {
    TableSchema {
        id: TableId {
            namespace: "inventory".into(),
            table: "products".into(),
        },
        version: 1,
        columns: vec![
            column("id", FieldType::Int, false, "int"),
            column("name", FieldType::String, false, "varchar(255 bytes)"),
            column(
                "price",
                FieldType::Decimal {
                    precision: 10,
                    scale: 2,
                },
                true,
                "decimal(10,2)",
            ),
            column(
                "stock",
                FieldType::Decimal {
                    precision: 20,
                    scale: 0,
                },
                false,
                "bigint unsigned",
            ),
            column("weight", FieldType::Double, true, "double"),
            column("added", FieldType::Date, true, "date"),
            column("updated", FieldType::TimestampMicros, true, "timestamp(6)"),
            column(
                "local",
                FieldType::LocalTimestampMicros,
                true,
                "datetime(6)",
            ),
            column("shelf_time", FieldType::TimeMicros, true, "time(6)"),
            column("photo", FieldType::Bytes, true, "blob"),
            column("active", FieldType::Boolean, false, "bit(1)"),
            column("size", FieldType::Enum, true, "enum"),
            column("tags", FieldType::Set, true, "set"),
            column("attrs", FieldType::Json, true, "json"),
            column("sku", FieldType::Uuid, true, "uuid"),
            column("my-odd col", FieldType::Long, true, "bigint"),
        ],
        primary_key: vec![0],
    }
}

fn row(schema: &TableSchema, values: &[Value<'_>]) -> Vec<u8> {
    let mut buf = Vec::new();
    RowEncoder::encode_row(schema, values, &mut buf).expect("row encodes");
    buf
}

fn sample_values(id: i32, price: &str, name: &'static str) -> Vec<Value<'static>> {
    vec![
        Value::Int(id),
        Value::Text(Cow::Borrowed(name)),
        Value::Decimal(Unscaled::parse(price, 2).unwrap()),
        Value::Decimal(Unscaled::parse("18446744073709551615", 0).unwrap()),
        Value::Double(-0.5),
        Value::Date(19_782),
        Value::Micros(1_709_210_096_123_456),
        Value::Micros(-1_000_001),
        Value::Micros(-3_723_500_000),
        Value::Bytes(Cow::Borrowed(&[0x00, 0xff, 0x10])),
        Value::Boolean(true),
        Value::Text(Cow::Borrowed("large")),
        Value::Text(Cow::Borrowed("a,c")),
        Value::Text(Cow::Borrowed("{\"k\": [1, null]}")),
        Value::Text(Cow::Borrowed("123e4567-e89b-12d3-a456-426614174000")),
        Value::Null,
    ]
}

fn mysql_source(row: u32) -> SourceInfo {
    SourceInfo::Mysql(MysqlSourceInfo {
        ts_us: 1_700_000_000_000_000,
        flavor: MysqlFlavor::Mariadb,
        snapshot: SnapshotMarker::False,
        db: "inventory".into(),
        table: Some("products".into()),
        server_id: 1,
        gtid: Some("0-1-42".into()),
        file: "mariadb-bin.000003".into(),
        pos: 1234,
        row,
        thread: Some(57),
    })
}

fn position(rows_done: u64) -> Position {
    Position::Mysql(BinlogPosition {
        file: "mariadb-bin.000003".into(),
        pos: 1234,
        gtid_set: Arc::default(),
        rows_done,
        backfill: None,
    })
}

fn python_decode(files: &[&Path]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/avro_decode.py");
    let output = Command::new("python3")
        .arg(script)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "fastavro could not decode the files: {}\n(install it with `pip install fastavro`; scripts/test.sh does)",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("decoder prints JSON")
}

/// Compares with the golden file, or writes it when HEADWATER_BLESS=1.
fn assert_golden(name: &str, actual: &serde_json::Value) {
    let path = golden_dir().join(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("HEADWATER_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with HEADWATER_BLESS=1)", path.display()));
    let golden: serde_json::Value = serde_json::from_str(&golden).unwrap();
    assert_eq!(actual, &golden, "{name} differs from its golden file");
}

#[test]
fn mysql_envelope_matches_the_golden_schema_and_records() {
    let schema = products();
    let envelope = schema.envelope_schema("shop", ConnectorKind::Mysql);
    assert_golden("mysql-inventory-products.value.avsc", &envelope);
    assert_golden(
        "mysql-inventory-products.key.avsc",
        &schema.key_schema("shop").unwrap(),
    );
    apache_avro::Schema::parse_str(&envelope.to_string()).expect("apache-avro accepts the schema");

    let before = sample_values(7, "9.99", "lamp");
    let after = sample_values(7, "-12345678.01", "Lampe ü 🌊");
    let tx = |n| {
        Some(TransactionInfo {
            id: "0-1-42".into(),
            total_order: n,
            data_collection_order: n,
        })
    };
    let records = [
        ChangeRecord {
            table: Arc::new(schema.clone()),
            op: Op::Create,
            key: None,
            before: None,
            after: Some(row(&schema, &before)),
            source: mysql_source(0),
            transaction: tx(1),
            position: position(1),
        },
        ChangeRecord {
            table: Arc::new(schema.clone()),
            op: Op::Update,
            key: None,
            before: Some(row(&schema, &before)),
            after: Some(row(&schema, &after)),
            source: mysql_source(1),
            transaction: tx(2),
            position: position(2),
        },
        ChangeRecord {
            table: Arc::new(schema.clone()),
            op: Op::Delete,
            key: None,
            before: Some(row(&schema, &after)),
            after: None,
            source: mysql_source(2),
            transaction: None,
            position: position(3),
        },
    ];
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("records.avro");
    let mut writer = ContainerWriter::new(
        std::fs::File::create(&file).unwrap(),
        &envelope.to_string(),
        [7; 16],
    )
    .unwrap();
    for record in &records {
        let mut buf = Vec::new();
        encode_envelope(record, "shop", 1_700_000_000_500_250, &mut buf);
        writer.append(&buf).unwrap();
    }
    writer.finish().unwrap();
    let decoded = python_decode(&[&file]);
    assert_golden(
        "mysql-inventory-products.records.json",
        &decoded[0]["records"],
    );
}

#[test]
fn postgres_source_block_matches_the_golden_record() {
    let schema = TableSchema {
        id: TableId {
            namespace: "public".into(),
            table: "accounts".into(),
        },
        version: 1,
        columns: vec![
            column("id", FieldType::Long, false, "bigint"),
            column("balance", FieldType::DecimalString, true, "numeric"),
            column(
                "tags",
                FieldType::Array(Box::new(FieldType::String)),
                true,
                "text[]",
            ),
        ],
        primary_key: vec![0],
    };
    let envelope = schema.envelope_schema("bank", ConnectorKind::Postgres);
    assert_golden("postgresql-public-accounts.value.avsc", &envelope);
    let mut after = Vec::new();
    RowEncoder::encode_row(
        &schema,
        &[
            Value::Long(1),
            Value::Text(Cow::Borrowed("NaN")),
            Value::Null,
        ],
        &mut after,
    )
    .unwrap();
    let record = ChangeRecord {
        table: Arc::new(schema.clone()),
        op: Op::Create,
        key: None,
        before: None,
        after: Some(after),
        source: SourceInfo::Postgres(PgSourceInfo {
            ts_us: 1_700_000_000_000_123,
            snapshot: SnapshotMarker::First,
            db: "bank".into(),
            schema: "public".into(),
            table: Some("accounts".into()),
            tx_id: Some(771),
            lsn: Some(0x16_B374_D848),
            last_commit_lsn: Some(0x16_B374_D000),
        }),
        transaction: Some(TransactionInfo {
            id: "771:16/B374D848".into(),
            total_order: 1,
            data_collection_order: 1,
        }),
        position: Position::Postgres(PgPosition::at(Lsn(0x16_B374_D848), 1)),
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg.avro");
    let mut writer = ContainerWriter::new(
        std::fs::File::create(&file).unwrap(),
        &envelope.to_string(),
        [9; 16],
    )
    .unwrap();
    let mut buf = Vec::new();
    encode_envelope(&record, "bank", 1_700_000_000_500_250, &mut buf);
    writer.append(&buf).unwrap();
    writer.finish().unwrap();
    let decoded = python_decode(&[&file]);
    assert_golden(
        "postgresql-public-accounts.records.json",
        &decoded[0]["records"],
    );
}
