//! The PostgreSQL source end to end, against the real PostgreSQL from `scripts/services.sh`.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use std::collections::HashMap;

struct TypedColumn {
    name: &'static str,
    sql_type: &'static str,
    canonical_sql: &'static str,
    values: [&'static str; 3],
}

const COLUMNS: &[TypedColumn] = &[
    TypedColumn { name: "c_bool", sql_type: "boolean", canonical_sql: "CASE WHEN c_bool THEN '1' WHEN NOT c_bool THEN '0' END", values: ["true", "false", "true"] },
    TypedColumn { name: "c_int2", sql_type: "smallint", canonical_sql: "c_int2::text", values: ["-32768", "32767", "0"] },
    TypedColumn { name: "c_int4", sql_type: "integer", canonical_sql: "c_int4::text", values: ["-2147483648", "2147483647", "7"] },
    TypedColumn { name: "c_int8", sql_type: "bigint", canonical_sql: "c_int8::text", values: ["-9223372036854775808", "9223372036854775807", "0"] },
    TypedColumn { name: "c_float4", sql_type: "real", canonical_sql: "c_float4::float8::text", values: ["1.5", "-0.1", "'Infinity'"] },
    TypedColumn { name: "c_float8", sql_type: "double precision", canonical_sql: "c_float8::text", values: ["3.141592653589793", "'NaN'", "-1e300"] },
    TypedColumn { name: "c_numeric", sql_type: "numeric(12,3)", canonical_sql: "CASE WHEN c_numeric = 'NaN' THEN NULL ELSE c_numeric::text END", values: ["-123456789.123", "'NaN'", "0.5"] },
    TypedColumn { name: "c_numeric_any", sql_type: "numeric", canonical_sql: "c_numeric_any::text", values: ["'NaN'", "123456789012345678901234567890.000000000000000000001", "-0.5000"] },
    TypedColumn { name: "c_text", sql_type: "text", canonical_sql: "c_text", values: ["'hello 🌊'", "''", "'multi\nline \"quoted\" \\\\ back'"] },
    TypedColumn { name: "c_varchar", sql_type: "varchar(20)", canonical_sql: "c_varchar::text", values: ["'ünïcødé'", "''", "'x'"] },
    TypedColumn { name: "c_char", sql_type: "char(5)", canonical_sql: "rpad(c_char::text, 5)", values: ["'ab'", "'abcde'", "''"] },
    TypedColumn { name: "c_bytea", sql_type: "bytea", canonical_sql: "encode(c_bytea, 'hex')", values: ["'\\x00ff10'", "''", "decode(repeat('ab', 1000), 'hex')"] },
    TypedColumn { name: "c_date", sql_type: "date", canonical_sql: "CASE WHEN isfinite(c_date) THEN (c_date - date '1970-01-01')::text END", values: ["'2024-02-29'", "'0044-03-15 BC'", "'infinity'"] },
    TypedColumn { name: "c_time", sql_type: "time(6)", canonical_sql: "(extract(epoch from c_time) * 1000000)::bigint::text", values: ["'13:45:07.123456'", "'00:00:00'", "'24:00:00'"] },
    TypedColumn { name: "c_timestamp", sql_type: "timestamp(6)", canonical_sql: "CASE WHEN isfinite(c_timestamp) THEN (extract(epoch from c_timestamp) * 1000000)::bigint::text END", values: ["'2024-02-29 12:34:56.789012'", "'1900-01-01 00:00:00'", "'-infinity'"] },
    TypedColumn { name: "c_timestamptz", sql_type: "timestamptz(6)", canonical_sql: "CASE WHEN isfinite(c_timestamptz) THEN (extract(epoch from c_timestamptz) * 1000000)::bigint::text END", values: ["'2024-02-29 12:34:56.5+05:30'", "'1970-01-01 00:00:00+00'", "'infinity'"] },
    TypedColumn { name: "c_interval", sql_type: "interval", canonical_sql: "c_interval::text", values: ["'1 year 2 months 3 days 04:05:06.5'", "'-1 day'", "'0'"] },
    TypedColumn { name: "c_uuid", sql_type: "uuid", canonical_sql: "c_uuid::text", values: ["'123e4567-e89b-12d3-a456-426614174000'", "'00000000-0000-0000-0000-000000000000'", "gen_random_uuid()"] },
    TypedColumn { name: "c_json", sql_type: "json", canonical_sql: "c_json::text", values: ["'{\"b\": 1,  \"a\": [true, null]}'", "'[]'", "'\"s\"'"] },
    TypedColumn { name: "c_jsonb", sql_type: "jsonb", canonical_sql: "c_jsonb::text", values: ["'{\"b\": 1, \"a\": [true, null]}'", "'{}'", "'3.5'"] },
    TypedColumn { name: "c_inet", sql_type: "inet", canonical_sql: "abbrev(c_inet)", values: ["'192.168.0.1/24'", "'::1'", "'10.0.0.1'"] },
    TypedColumn { name: "c_cidr", sql_type: "cidr", canonical_sql: "c_cidr::text", values: ["'10.0.0.0/8'", "'2001:db8::/32'", "'192.168.1.0/24'"] },
    TypedColumn { name: "c_macaddr", sql_type: "macaddr", canonical_sql: "c_macaddr::text", values: ["'08:00:2b:01:02:03'", "'00:00:00:00:00:00'", "'ff:ff:ff:ff:ff:ff'"] },
    TypedColumn { name: "c_mood", sql_type: "mood", canonical_sql: "c_mood::text", values: ["'happy'", "'sad'", "'ok'"] },
    TypedColumn { name: "c_positive", sql_type: "positive", canonical_sql: "c_positive::text", values: ["1", "2147483647", "42"] },
    TypedColumn { name: "c_int_array", sql_type: "integer[]", canonical_sql: "array_to_string(c_int_array, '|', 'NULL')", values: ["'{1,2,NULL,-4}'", "'{}'", "ARRAY[7]"] },
    TypedColumn { name: "c_text_array", sql_type: "text[]", canonical_sql: "array_to_string(c_text_array, '|', 'NULL')", values: ["ARRAY['a b', 'c,d', 'e\"f', NULL]", "'{}'", "ARRAY['NULL']"] },
    TypedColumn { name: "c_uuid_array", sql_type: "uuid[]", canonical_sql: "array_to_string(c_uuid_array, '|', 'NULL')", values: ["ARRAY['123e4567-e89b-12d3-a456-426614174000'::uuid]", "'{}'", "NULL"] },
];

fn decimal_text(decimal: &apache_avro::Decimal, scale: usize) -> String {
    let bytes: Vec<u8> = decimal.try_into().expect("decimal bytes");
    headwater_contract::avro_json::decimal_text(&bytes, scale)
}

fn float_text(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "Infinity".into()
    } else if x == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        x.to_string()
    }
}

fn canonical(value: &AvroValue, column: &TypedColumn) -> Option<String> {
    Some(match value {
        AvroValue::Null => return None,
        AvroValue::Boolean(b) => if *b { "1" } else { "0" }.to_string(),
        AvroValue::Int(n) | AvroValue::Date(n) => n.to_string(),
        AvroValue::Long(n) | AvroValue::TimestampMicros(n) | AvroValue::LocalTimestampMicros(n) => {
            n.to_string()
        }
        AvroValue::Float(x) => float_text(f64::from(*x)),
        AvroValue::Double(x) => float_text(*x),
        AvroValue::Decimal(d) => decimal_text(d, 3),
        AvroValue::String(s) => s.clone(),
        AvroValue::Uuid(u) => u.to_string(),
        AvroValue::Bytes(b) => b.iter().map(|b| format!("{b:02x}")).collect(),
        AvroValue::Array(items) => items
            .iter()
            .map(|item| {
                canonical(unwrap_union(item).unwrap_or(&AvroValue::Null), column)
                    .unwrap_or_else(|| "NULL".into())
            })
            .collect::<Vec<_>>()
            .join("|"),
        other => panic!("column {}: unexpected Avro value {other:?}", column.name),
    })
}

fn same(column: &TypedColumn, lake: &Option<String>, db: &Option<String>) -> bool {
    let numeric = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<f64>().ok());
    if column.sql_type.starts_with("real") || column.sql_type.starts_with("double") {
        if let (Some(a), Some(b)) = (numeric(lake), numeric(db)) {
            return a == b || (a.is_nan() && b.is_nan());
        }
    }
    lake == db
}

async fn select_canonical(
    client: &tokio_postgres::Client,
    schema: &str,
    id: i64,
) -> Vec<Option<String>> {
    let exprs: Vec<&str> = COLUMNS.iter().map(|c| c.canonical_sql).collect();
    let sql = format!(
        "SELECT {} FROM {schema}.typed WHERE id = {id}",
        exprs.join(", ")
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    (0..COLUMNS.len())
        .map(|i| row.get::<_, Option<String>>(i))
        .collect()
}

async fn new_schema(prefix: &str) -> (String, tokio_postgres::Client) {
    let schema = unique(prefix);
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute("SET intervalstyle = 'iso_8601'; SET timezone = 'UTC'")
        .await
        .unwrap();
    (schema, client)
}

async fn drop_schema(schema: &str, work: &Workdir) {
    let admin = postgres_admin().await;
    let slot = work.slot();
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP PUBLICATION IF EXISTS {slot}"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips_through_the_lake() {
    let (schema, client) = new_schema("hw_pgtypes").await;
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    client
        .batch_execute(&format!(
            "SET search_path = {schema};
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
             CREATE TABLE typed (id bigint PRIMARY KEY, {});
             ALTER TABLE typed REPLICA IDENTITY FULL",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgtypes", &schema, "");
    work.catch_up();

    let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let mut expected: HashMap<i64, Vec<Option<String>>> = HashMap::new();
    for row in 0..3usize {
        let values: Vec<&str> = COLUMNS.iter().map(|c| c.values[row]).collect();
        let sql = format!(
            "SET search_path = {schema}; INSERT INTO typed (id, {}) VALUES ({row}, {})",
            names.join(", "),
            values.join(", ")
        );
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        expected.insert(
            row as i64,
            select_canonical(&client, &schema, row as i64).await,
        );
    }
    client
        .batch_execute(&format!("INSERT INTO {schema}.typed (id) VALUES (3)"))
        .await
        .unwrap();
    expected.insert(3, select_canonical(&client, &schema, 3).await);
    client
        .batch_execute(&format!(
            "UPDATE {schema}.typed SET c_text = 'changed', c_int4 = c_int4 - 1 WHERE id = 2"
        ))
        .await
        .unwrap();
    let updated = select_canonical(&client, &schema, 2).await;
    client
        .batch_execute(&format!("DELETE FROM {schema}.typed WHERE id = 0"))
        .await
        .unwrap();
    work.catch_up();

    let records = read_stream(&work.lake(), &format!("pgtypes.{schema}.typed"));
    let ops: Vec<String> = records.iter().map(op).collect();
    assert_eq!(ops, ["c", "c", "c", "c", "u", "d"]);
    let check = |image: &HashMap<String, AvroValue>, want: &[Option<String>], what: &str| {
        for (column, want) in COLUMNS.iter().zip(want) {
            let got = canonical(&image[column.name], column);
            assert!(
                same(column, &got, want),
                "{what}, column {} ({}): lake {got:?} != SELECT {want:?}",
                column.name,
                column.sql_type
            );
        }
        assert_eq!(image["__unchanged_toast"], AvroValue::Null);
    };
    for (i, record) in records.iter().take(4).enumerate() {
        check(
            &image(record, "after").expect("after"),
            &expected[&(i as i64)],
            &format!("insert {i}"),
        );
    }
    check(
        &image(&records[4], "before").expect("before"),
        &expected[&2],
        "update before-image",
    );
    check(
        &image(&records[4], "after").expect("after"),
        &updated,
        "update after-image",
    );
    check(
        &image(&records[5], "before").expect("before"),
        &expected[&0],
        "delete before-image",
    );
    drop_schema(&schema, &work).await;
}

/// Random hex: incompressible, so PostgreSQL stores it out of line (TOAST).
const TOASTED: &str = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_values_are_never_passed_off_as_values() {
    let (schema, client) = new_schema("hw_toast").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.plain (id int PRIMARY KEY, n int, big text);
             CREATE TABLE {schema}.full_identity (id int PRIMARY KEY, n int, big text);
             ALTER TABLE {schema}.full_identity REPLICA IDENTITY FULL"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("toast", &schema, "");
    work.catch_up();
    for table in ["plain", "full_identity"] {
        client
            .batch_execute(&format!(
                "INSERT INTO {schema}.{table} VALUES (1, 0, {TOASTED}); UPDATE {schema}.{table} SET n = 1 WHERE id = 1"
            ))
            .await
            .unwrap();
    }
    let big: String = client
        .query_one(&format!("SELECT big FROM {schema}.plain"), &[])
        .await
        .unwrap()
        .get(0);
    let big_full: String = client
        .query_one(&format!("SELECT big FROM {schema}.full_identity"), &[])
        .await
        .unwrap()
        .get(0);
    assert!(big.len() > 9000);
    work.catch_up();

    let plain = read_stream(&work.lake(), &format!("toast.{schema}.plain"));
    let after = image(&plain[1], "after").unwrap();
    assert_eq!(after["n"], AvroValue::Int(1));
    assert_eq!(
        after["big"],
        AvroValue::Null,
        "the unsent value is not invented"
    );
    assert_eq!(
        after["__unchanged_toast"],
        AvroValue::Array(vec![AvroValue::Union(
            1,
            Box::new(AvroValue::String("big".into()))
        )])
    );
    assert_eq!(
        image(&plain[0], "after").unwrap()["big"],
        AvroValue::String(big)
    );

    let full = read_stream(&work.lake(), &format!("toast.{schema}.full_identity"));
    let after = image(&full[1], "after").unwrap();
    assert_eq!(
        after["big"],
        AvroValue::String(big_full),
        "REPLICA IDENTITY FULL carries the old value"
    );
    assert_eq!(after["__unchanged_toast"], AvroValue::Null);
    drop_schema(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_truncate_partitions_and_aborted_transactions() {
    let (schema, client) = new_schema("hw_pgddl").await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id int PRIMARY KEY, a text);
             CREATE TABLE {schema}.events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
             CREATE TABLE {schema}.events_2024 PARTITION OF {schema}.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
             CREATE TABLE {schema}.events_2025 PARTITION OF {schema}.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgddl", &schema, "");
    work.catch_up();
    for statement in [
        format!("INSERT INTO {schema}.t VALUES (1, 'one')"),
        format!("ALTER TABLE {schema}.t ADD COLUMN b int"),
        format!("INSERT INTO {schema}.t VALUES (2, 'two', 2)"),
        format!("ALTER TABLE {schema}.t DROP COLUMN a"),
        format!("INSERT INTO {schema}.t VALUES (3, 3)"),
        format!("ALTER TABLE {schema}.t ALTER COLUMN b TYPE bigint"),
        format!("INSERT INTO {schema}.t VALUES (4, 4)"),
        format!("BEGIN; INSERT INTO {schema}.t SELECT g, g FROM generate_series(100, 10100) g; ROLLBACK"),
        format!("TRUNCATE {schema}.t"),
        format!("INSERT INTO {schema}.events VALUES (1, '2024-06-01'), (2, '2025-06-01')"),
    ] {
        client.batch_execute(&statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    work.catch_up();
    let records = read_stream(&work.lake(), &format!("pgddl.{schema}.t"));
    let ops: Vec<String> = records.iter().map(op).collect();
    assert_eq!(
        ops,
        ["c", "c", "c", "c", "t"],
        "the rolled-back rows never appear"
    );
    let columns: Vec<Vec<String>> = records[..4]
        .iter()
        .map(|r| {
            let mut c: Vec<String> = image(r, "after")
                .unwrap()
                .keys()
                .filter(|k| !k.starts_with("__"))
                .cloned()
                .collect();
            c.sort();
            c
        })
        .collect();
    assert_eq!(
        columns,
        [
            vec!["a", "id"],
            vec!["a", "b", "id"],
            vec!["b", "id"],
            vec!["b", "id"]
        ]
    );
    assert_eq!(
        image(&records[3], "after").unwrap()["b"],
        AvroValue::Long(4),
        "b became bigint"
    );
    let changes = read_stream(&work.lake(), "pgddl.schema_changes");
    assert!(
        changes.len() >= 3,
        "a schema-change record per new version: {}",
        changes.len()
    );
    let partitioned = read_stream(&work.lake(), &format!("pgddl.{schema}.events"));
    assert_eq!(partitioned.len(), 2, "partitions publish under their root");
    drop_schema(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pipeline_captures_several_schemas() {
    let (first, client) = new_schema("hw_pgmulti_a").await;
    let second = unique("hw_pgmulti_b");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {second} AUTHORIZATION headwater"))
        .await
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {first}.t (id int PRIMARY KEY); CREATE TABLE {second}.t (id int PRIMARY KEY, note text)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgmulti", &first, "");
    let text = std::fs::read_to_string(work.config()).unwrap().replace(
        &format!("include = [\"{first}.*\"]"),
        &format!("include = [\"{first}.*\", \"{second}.*\"]"),
    );
    std::fs::write(work.config(), text).unwrap();
    work.catch_up();
    client
        .batch_execute(&format!(
            "INSERT INTO {first}.t VALUES (1); INSERT INTO {second}.t VALUES (1, 'x'), (2, 'y')"
        ))
        .await
        .unwrap();
    work.catch_up();
    assert_eq!(
        read_stream(&work.lake(), &format!("pgmulti.{first}.t")).len(),
        1
    );
    assert_eq!(
        read_stream(&work.lake(), &format!("pgmulti.{second}.t")).len(),
        2
    );
    drop_schema(&first, &work).await;
    postgres_admin()
        .await
        .batch_execute(&format!("DROP SCHEMA {second} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_copied_by_a_snapshot_equals_its_streamed_image() {
    let (schema, client) = new_schema("hw_pgsnaptypes").await;
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    client
        .batch_execute(&format!(
            "SET search_path = {schema};
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
             CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
             CREATE TABLE typed (id bigint PRIMARY KEY, {});",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let names: Vec<&str> = COLUMNS.iter().map(|c| c.name).collect();
    let insert = |id: usize, row: usize| {
        let values: Vec<&str> = COLUMNS.iter().map(|c| c.values[row]).collect();
        format!(
            "SET search_path = {schema}; INSERT INTO typed (id, {}) VALUES ({id}, {})",
            names.join(", "),
            values.join(", ")
        )
    };
    for row in 0..3 {
        client.batch_execute(&insert(row, row)).await.unwrap();
    }
    client
        .batch_execute(&format!("INSERT INTO {schema}.typed (id) VALUES (3)"))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgsnaptypes", &schema, "snapshot = \"initial\"");
    work.catch_up(); // copies rows 0..=3
    for row in 0..3 {
        client.batch_execute(&insert(10 + row, row)).await.unwrap();
    }
    client
        .batch_execute(&format!("INSERT INTO {schema}.typed (id) VALUES (13)"))
        .await
        .unwrap();
    work.catch_up(); // streams rows 10..=13

    let records = read_stream(&work.lake(), &format!("pgsnaptypes.{schema}.typed"));
    let ops: Vec<String> = records.iter().map(op).collect();
    assert_eq!(ops, ["r", "r", "r", "r", "c", "c", "c", "c"]);
    for row in 0..4 {
        let copied = image(&records[row], "after").unwrap();
        let streamed = image(&records[4 + row], "after").unwrap();
        for column in COLUMNS
            .iter()
            .filter(|c| !c.values[row.min(2)].contains("random"))
        {
            // compared as text: NaN is not equal to itself
            assert_eq!(
                format!("{:?}", copied[column.name]),
                format!("{:?}", streamed[column.name]),
                "row {row}, column {} ({}): the copy and the stream disagree",
                column.name,
                column.sql_type
            );
        }
    }
    let history =
        std::fs::read_to_string(work.path().join("state/postgres-schema-history.json")).unwrap();
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert_eq!(
        history["tables"][format!("{schema}.typed")]
            .as_array()
            .map(Vec::len),
        Some(1),
        "the catalog and pgoutput describe the table as one schema version: {history}"
    );
    drop_schema(&schema, &work).await;
}
