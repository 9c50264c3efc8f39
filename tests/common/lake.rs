//! Reading the Avro lake back with apache-avro (not Headwater's encoder), and comparing it with the source tables.

use super::*;

/// Every record of every committed `.avro` file under `lake/<stream>/`, in commit order.
pub fn read_stream(lake: &Path, stream: &str) -> Vec<AvroValue> {
    let dir = lake.join(stream);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "avro"))
            .collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).expect("read avro file");
        let reader = apache_avro::Reader::new(&bytes[..])
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for value in reader {
            out.push(
                value.unwrap_or_else(|e| panic!("{}: torn or corrupt record: {e}", file.display())),
            );
        }
    }
    out
}

/// A record's field by name.
pub fn field<'a>(record: &'a AvroValue, name: &str) -> &'a AvroValue {
    match record {
        AvroValue::Record(fields) => fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no field {name} in {record:?}")),
        other => panic!("not a record: {other:?}"),
    }
}

/// Strips a `["null", T]` union.
pub fn unwrap_union(value: &AvroValue) -> Option<&AvroValue> {
    match value {
        AvroValue::Union(_, inner) => match inner.as_ref() {
            AvroValue::Null => None,
            other => Some(other),
        },
        AvroValue::Null => None,
        other => Some(other),
    }
}

/// `before`/`after` as a map of column → value, `None` for a null image.
pub fn image(record: &AvroValue, which: &str) -> Option<HashMap<String, AvroValue>> {
    match unwrap_union(field(record, which))? {
        AvroValue::Record(fields) => Some(
            fields
                .iter()
                .map(|(n, v)| {
                    (
                        n.clone(),
                        unwrap_union(v).cloned().unwrap_or(AvroValue::Null),
                    )
                })
                .collect(),
        ),
        other => panic!("{which} is not a record: {other:?}"),
    }
}

pub fn op(record: &AvroValue) -> String {
    match field(record, "op") {
        AvroValue::String(s) => s.clone(),
        other => panic!("op is {other:?}"),
    }
}

/// An Avro integer of either width.
pub fn avro_int(value: &AvroValue) -> i64 {
    match value {
        AvroValue::Int(n) => i64::from(*n),
        AvroValue::Long(n) => *n,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A table of a snapshot test: its name, key columns, and the columns compared.
pub struct SnapshotTable {
    pub name: &'static str,
    pub key: &'static [&'static str],
    pub columns: &'static [&'static str],
}

/// A value as `SELECT … ::text` / `CONCAT_WS` prints it, to compare the lake with the table.
pub fn render(value: &AvroValue) -> String {
    match value {
        AvroValue::Null => "NULL".into(),
        AvroValue::Int(n) => n.to_string(),
        AvroValue::Long(n) => n.to_string(),
        AvroValue::String(s) => s.clone(),
        AvroValue::Uuid(u) => u.to_string(),
        AvroValue::Union(_, inner) => render(inner),
        other => format!("{other:?}"),
    }
}

/// Key → row, replaying a lake stream's records in order, as a consumer of the lake computes
/// the table's current state (an independent reader: apache-avro, not Headwater's encoder).
pub fn lake_state(
    work: &Workdir,
    stream: &str,
    table: &SnapshotTable,
) -> std::collections::BTreeMap<String, String> {
    let mut state = std::collections::BTreeMap::new();
    for record in read_stream(&work.lake(), stream) {
        let op = op(&record);
        let image = match op.as_str() {
            "d" => image(&record, "before").expect("a delete has its before image"),
            _ => image(&record, "after").expect("an after image"),
        };
        let key: Vec<String> = table.key.iter().map(|k| render(&image[*k])).collect();
        let key = key.join("|");
        if op == "d" {
            state.remove(&key);
        } else {
            let row: Vec<String> = table.columns.iter().map(|c| render(&image[*c])).collect();
            state.insert(key, row.join("|"));
        }
    }
    state
}

/// Asserts that the lake's state of `table` equals `expected` (key → row, from `SELECT`).
pub fn assert_same_state(
    table: &SnapshotTable,
    expected: &std::collections::BTreeMap<String, String>,
    found: &std::collections::BTreeMap<String, String>,
) {
    let differing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| found.get(*k) != Some(*v))
        .take(5)
        .collect();
    let extra: Vec<_> = found
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        differing.is_empty() && extra.is_empty(),
        "{}: {} rows in the table, {} in the lake; differing: {differing:?}, not in the table: {extra:?}",
        table.name,
        expected.len(),
        found.len()
    );
}

/// Every copied (`op = "r"`) record's after image has `column` = `value`; names the first ids
/// (column `id`) that do not.
pub fn assert_copied_rows_have(records: &[AvroValue], column: &str, value: i64) {
    let without: Vec<i64> = records
        .iter()
        .filter(|r| op(r) == "r")
        .filter(|r| image(r, "after").and_then(|a| a.get(column).map(avro_int)) != Some(value))
        .map(|r| image(r, "after").map_or(-1, |a| avro_int(&a["id"])))
        .collect();
    assert!(
        without.is_empty(),
        "rows copied without {column} = {value}: {:?}",
        &without[..without.len().min(10)]
    );
}

/// How many copied rows (`op = r`) carry each `source.snapshot` value.
pub fn snapshot_markers(records: &[AvroValue]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for record in records.iter().filter(|r| op(r) == "r") {
        *counts
            .entry(render(field(field(record, "source"), "snapshot")))
            .or_insert(0) += 1;
    }
    counts
}

/// The Debezium 3 fields every record carries: `source.connector`, and the `ts_us`/`ts_ns`
/// beside each `ts_ms` (envelope and `source`), which must name the same instant.
pub fn assert_debezium_times_and_connector(records: &[AvroValue], connector: &str) {
    assert!(!records.is_empty());
    for record in records {
        let source = field(record, "source");
        assert_eq!(render(field(source, "connector")), connector, "{record:?}");
        for block in [record, source] {
            let ms = avro_int(unwrap_union(field(block, "ts_ms")).expect("ts_ms"));
            let us = avro_int(unwrap_union(field(block, "ts_us")).expect("ts_us"));
            let ns = avro_int(unwrap_union(field(block, "ts_ns")).expect("ts_ns"));
            assert_eq!(
                us.div_euclid(1000),
                ms,
                "ts_us names ts_ms's instant: {block:?}"
            );
            assert_eq!(ns, us * 1000, "ts_ns names ts_us's instant: {block:?}");
        }
    }
}
