//! Every mapped column type through both lakehouse sinks, read back as the value (not as bytes)
//! by python `deltalake` and DuckDB (Delta), pyiceberg and DuckDB's Iceberg extension (Iceberg): decimals as decimals or exact text, timestamps with and without
//! time zone, dates, times, UUID/JSON/ENUM/SET/INET as strings, binary as binary, arrays.

mod common;

use common::delta::*;
use common::*;
use mysql_async::prelude::Queryable;
use serde_json::{json, Value as Json};

/// (column definition, SQL literal, the value both readers must show)
type Case = (&'static str, &'static str, Json);

fn check(format: Lakehouse, work: &Workdir, stream: &str, cases: &[Case]) {
    let mirror = format.table(work, "mirror", stream);
    let changelog = format.table(work, "changelog", stream);
    let names: Vec<String> = (0..cases.len()).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    for reader in format.readers() {
        for uri in [&mirror, &changelog] {
            let rows = read_delta(reader, uri);
            let values = rows.project(&names);
            assert_eq!(values.len(), 1, "{reader} {uri}: one row");
            for (i, (definition, literal, expected)) in cases.iter().enumerate() {
                assert_eq!(
                    &values[0][i], expected,
                    "{reader} reads {definition} = {literal} from {uri}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_types_are_read_as_values_from_delta() {
    mariadb_types_are_read_as_values(Lakehouse::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_types_are_read_as_values_from_iceberg() {
    mariadb_types_are_read_as_values(Lakehouse::Iceberg).await;
}

async fn mariadb_types_are_read_as_values(format: Lakehouse) {
    let cases: Vec<Case> = vec![
        ("TINYINT", "-5", json!(-5)),
        ("SMALLINT UNSIGNED", "65535", json!(65535)),
        ("MEDIUMINT", "-8388608", json!(-8388608)),
        ("INT UNSIGNED", "4294967295", json!(4294967295u64)),
        ("BIGINT", "-9223372036854775808", json!(i64::MIN)),
        (
            "BIGINT UNSIGNED",
            "18446744073709551615",
            json!("18446744073709551615"),
        ),
        ("DECIMAL(10,2)", "-12345678.91", json!("-12345678.91")),
        (
            "DECIMAL(38,10)",
            "1234567890123456789012345678.0123456789",
            json!("1234567890123456789012345678.0123456789"),
        ),
        (
            "DECIMAL(65,30)",
            "12345678901234567890123456789012345.123456789012345678901234567890",
            json!("12345678901234567890123456789012345.123456789012345678901234567890"),
        ),
        ("FLOAT", "1.5", json!("1.5")),
        ("DOUBLE", "-0.25", json!("-0.25")),
        ("VARCHAR(20)", "'héllo ✓'", json!("héllo ✓")),
        ("TEXT", "'long text'", json!("long text")),
        ("VARBINARY(8)", "x'00ff10'", json!("00ff10")),
        ("BLOB", "x'cafe'", json!("cafe")),
        ("BIT(12)", "b'101010101010'", json!("0aaa")),
        ("BIT(1)", "b'1'", json!(true)),
        ("DATE", "'2024-02-29'", json!("2024-02-29")),
        (
            "DATETIME(6)",
            "'2024-05-06 07:08:09.123456'",
            json!("2024-05-06 07:08:09.123456"),
        ),
        (
            "TIMESTAMP(6) NULL",
            "'2024-05-06 07:08:09.654321'",
            json!("2024-05-06 07:08:09.654321Z"),
        ),
        (
            "TIME(6)",
            "'-838:59:59.000000'",
            json!(-3_020_399_000_000i64),
        ),
        ("YEAR", "2024", json!(2024)),
        ("ENUM('a','b','c')", "'b'", json!("b")),
        ("SET('x','y','z')", "'x,z'", json!("x,z")),
        ("JSON", "'{\"k\": [1, 2]}'", json!("{\"k\": [1, 2]}")),
        (
            "UUID",
            "'123e4567-e89b-12d3-a456-426614174000'",
            json!("123e4567-e89b-12d3-a456-426614174000"),
        ),
        ("INET6", "'2001:db8::1'", json!("2001:db8::1")),
        ("INT NULL", "NULL", json!(null)),
    ];
    let db = unique("hw_delta_types");
    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (d, _, _))| format!("c{i} {d}"))
        .collect();
    let values: Vec<&str> = cases.iter().map(|(_, v, _)| *v).collect();
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; SET time_zone = '+00:00'; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, {}) DEFAULT CHARSET=utf8mb4",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("dtypes", &db, "", "");
    format.use_sink(&work, "");
    work.catch_up();
    admin
        .query_drop(format!(
            "SET time_zone = '+00:00'; INSERT INTO `{db}`.t VALUES (1, {})",
            values.join(", ")
        ))
        .await
        .unwrap();
    work.catch_up();
    check(format, &work, &format!("dtypes.{db}.t"), &cases);
    let _ = admin.query_drop(format!("DROP DATABASE `{db}`")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_are_read_as_values_from_delta() {
    postgres_types_are_read_as_values(Lakehouse::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_types_are_read_as_values_from_iceberg() {
    postgres_types_are_read_as_values(Lakehouse::Iceberg).await;
}

async fn postgres_types_are_read_as_values(format: Lakehouse) {
    let cases: Vec<Case> = vec![
        ("smallint", "-32768", json!(-32768)),
        ("integer", "2147483647", json!(2147483647)),
        ("bigint", "-9223372036854775808", json!(i64::MIN)),
        ("numeric(10,2)", "-12345678.91", json!("-12345678.91")),
        (
            "numeric(50,10)",
            "1234567890123456789012345678901234567890.0123456789",
            json!("1234567890123456789012345678901234567890.0123456789"),
        ),
        (
            "numeric",
            "3.14159265358979323846264338327950288419716939937510",
            json!("3.14159265358979323846264338327950288419716939937510"),
        ),
        ("real", "1.5", json!("1.5")),
        ("double precision", "-0.25", json!("-0.25")),
        ("boolean", "true", json!(true)),
        ("text", "'héllo ✓'", json!("héllo ✓")),
        ("varchar(10)", "'abc'", json!("abc")),
        ("bytea", "'\\x00ff10'", json!("00ff10")),
        ("date", "'2024-02-29'", json!("2024-02-29")),
        (
            "timestamp",
            "'2024-05-06 07:08:09.123456'",
            json!("2024-05-06 07:08:09.123456"),
        ),
        (
            "timestamptz",
            "'2024-05-06 07:08:09.654321+02'",
            json!("2024-05-06 05:08:09.654321Z"),
        ),
        ("time", "'13:14:15.5'", json!(47_655_500_000i64)),
        (
            "uuid",
            "'123e4567-e89b-12d3-a456-426614174000'",
            json!("123e4567-e89b-12d3-a456-426614174000"),
        ),
        ("jsonb", "'{\"k\": [1, 2]}'", json!("{\"k\": [1, 2]}")),
        ("inet", "'10.0.0.1'", json!("10.0.0.1")),
        ("integer[]", "'{1,NULL,3}'", json!([1, null, 3])),
        ("text[]", "'{a,\"b c\"}'", json!(["a", "b c"])),
        ("integer", "NULL", json!(null)),
    ];
    let schema = unique("hw_delta_types");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    let columns: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (d, _, _))| format!("c{i} {d}"))
        .collect();
    let values: Vec<&str> = cases.iter().map(|(_, v, _)| *v).collect();
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id int PRIMARY KEY, {})",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("dtypes", &schema, "");
    format.use_sink(&work, "");
    work.catch_up();
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.t VALUES (1, {})",
            values.join(", ")
        ))
        .await
        .unwrap();
    work.catch_up();
    check(format, &work, &format!("dtypes.{schema}.t"), &cases);
    postgres_cleanup(&schema, &work).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_encoded_columns_are_read_back_from_delta() {
    delta_encoded_columns_are_read_back(Lakehouse::Delta).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_encoded_columns_are_read_back_from_iceberg() {
    delta_encoded_columns_are_read_back(Lakehouse::Iceberg).await;
}

/// id, a, b, d, dt, ts, tz, tm, s, n as the readers render them.
type SourceRow = (
    i64,
    i64,
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<i64>,
);

/// With `parquet_encodings = "delta"`, columns of many distinct values outgrow their dictionary
/// and go on in `DELTA_BINARY_PACKED` (integers, decimals, dates, timestamps, times) and
/// `DELTA_BYTE_ARRAY` (texts), nulls among them: both readers of each format read every row as
/// the source has it.
async fn delta_encoded_columns_are_read_back(format: Lakehouse) {
    const ROWS: i64 = 20_000;
    let db = unique("hw_lake_encodings");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, a INT, b BIGINT, \
             d DECIMAL(10,2), dt DATE, ts DATETIME(6), tz TIMESTAMP(6) NULL, tm TIME(6), \
             s VARCHAR(40), n INT NULL) DEFAULT CHARSET=utf8mb4"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("denc", &db, "", "");
    format.use_sink(&work, "parquet_encodings = \"delta\"\n");
    work.catch_up();
    admin
        .query_drop(format!(
            "SET time_zone = '+00:00'; INSERT INTO `{db}`.t SELECT seq, CAST(seq AS SIGNED) * 7 - 50000, \
             seq * 1000003, seq / 100, '2000-01-01' + INTERVAL seq DAY, \
             '2020-01-01 00:00:00.000001' + INTERVAL seq SECOND, \
             '2021-01-01 00:00:00.000002' + INTERVAL seq MINUTE, SEC_TO_TIME(CAST(seq AS SIGNED) - 10000), \
             CONCAT('SKU-', seq, IF(seq % 2 = 0, '-even', '')), IF(seq % 3 = 0, NULL, seq) \
             FROM `{db}`.seq_1_to_{ROWS}"
        ))
        .await
        .unwrap();
    work.catch_up();
    // the source's rows as the readers render them
    let source: Vec<SourceRow> =
        admin
            .query(format!(
                "SELECT id, a, b, CAST(d AS CHAR), DATE_FORMAT(dt, '%Y-%m-%d'), \
                 DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), \
                 CONCAT(DATE_FORMAT(CONVERT_TZ(tz, @@session.time_zone, '+00:00'), '%Y-%m-%d %H:%i:%s.%f'), 'Z'), \
                 CAST(TIME_TO_SEC(tm) AS SIGNED) * 1000000, s, n \
                 FROM `{db}`.t ORDER BY id"
            ))
            .await
            .unwrap();
    let expected: Vec<Vec<Json>> = source
        .into_iter()
        .map(|(id, a, b, d, dt, ts, tz, tm, s, n)| {
            vec![
                json!(id),
                json!(a),
                json!(b),
                json!(d),
                json!(dt),
                json!(ts),
                json!(tz),
                json!(tm),
                json!(s),
                json!(n),
            ]
        })
        .collect();
    assert_eq!(expected.len(), ROWS as usize);
    let stream = format!("denc.{db}.t");
    let names = ["id", "a", "b", "d", "dt", "ts", "tz", "tm", "s", "n"];
    for reader in format.readers() {
        for kind in ["mirror", "changelog"] {
            let uri = format.table(&work, kind, &stream);
            let mut rows = read_delta(reader, &uri).project(&names);
            rows.sort_by_key(|row| row[0].as_i64());
            assert_eq!(rows.len(), expected.len(), "{reader} {uri}: every row");
            for (read, source) in rows.iter().zip(&expected) {
                assert_eq!(read, source, "{reader} reads the row from {uri}");
            }
        }
    }
    // and the files do hold those encodings (a file of dictionaries alone would test nothing)
    let dir = format.table_dir(&work, "mirror", &stream);
    let encodings = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, glob, pyarrow.parquet as pq\n\
             seen = set()\n\
             for f in glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True):\n\
             \x20   m = pq.ParquetFile(f).metadata\n\
             \x20   for g in range(m.num_row_groups):\n\
             \x20       for c in range(m.num_columns):\n\
             \x20           col = m.row_group(g).column(c)\n\
             \x20           seen.update(col.path_in_schema + ':' + e for e in col.encodings)\n\
             print(' '.join(sorted(seen)))",
        ])
        .arg(&dir)
        .output()
        .expect("python3");
    let encodings = String::from_utf8_lossy(&encodings.stdout);
    for column in ["a", "b", "d", "dt", "ts", "tz", "tm", "n"] {
        assert!(
            encodings.contains(&format!("{column}:DELTA_BINARY_PACKED")),
            "{column} in DELTA_BINARY_PACKED: {encodings}"
        );
    }
    for column in ["s", "__position"] {
        assert!(
            encodings.contains(&format!("{column}:DELTA_BYTE_ARRAY")),
            "{column} in DELTA_BYTE_ARRAY: {encodings}"
        );
    }
    let _ = admin.query_drop(format!("DROP DATABASE `{db}`")).await;
}
