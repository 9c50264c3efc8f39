//! A mirror round's rows, from the changelog's rows and the mirror's own images.

use super::*;
use crate::changelog::{Changelog, ChangelogRound};
use arrow::array::{ArrayRef, AsArray};
use arrow::datatypes::{Int64Type, Schema, TimestampMicrosecondType};
use headwater_contract::avro::{RowEncoder, Value};
use headwater_contract::{Column, FieldType, TableId};

fn table() -> Arc<TableSchema> {
    let column = |name: &str, field_type, nullable| Column {
        name: name.into(),
        field_type,
        nullable,
        sql_type: "t".into(),
    };
    Arc::new(TableSchema {
        id: TableId {
            namespace: "db".into(),
            table: "t".into(),
        },
        version: 1,
        columns: vec![
            column("id", FieldType::Long, false),
            column("name", FieldType::String, true),
        ],
        primary_key: vec![0],
    })
}

/// An op, its images before and after, and whether the changelog writes it.
type Change<'a> = (Op, Option<&'a [u8]>, Option<&'a [u8]>, bool);

fn row(table: &TableSchema, id: i64, name: &str) -> Vec<u8> {
    RowEncoder::row_bytes(table, &[Value::Long(id), Value::Text(name.into())]).unwrap()
}

/// The rounds of a changelog and a soft-deleting mirror after `changes`, the `at`-th at
/// position `p{at}` and commit time `1000 + at`.
fn rounds(table: &Arc<TableSchema>, changes: &[Change]) -> (ChangelogRound, MirrorRound) {
    let mut changelog = Changelog::new("changelog t".into(), false);
    let mut mirror = Mirror::new(true);
    for (at, (op, before, after, logged)) in changes.iter().copied().enumerate() {
        let envelope = EnvelopeView {
            before,
            after,
            source_ts_ms: 1000 + at as i64,
            transaction_id: None,
        };
        let position = format!("p{at}");
        let in_changelog = if logged {
            Some(changelog.append(table, op, &envelope, &position).unwrap())
        } else {
            None
        };
        mirror
            .apply(table, op, &envelope, &position, in_changelog)
            .unwrap();
    }
    let logged = changelog.take_round().unwrap();
    let round = mirror.take_round(logged.batches());
    (logged, round)
}

fn ids(rows: &RecordBatch) -> Vec<i64> {
    rows.column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>()
        .values()
        .to_vec()
}

/// Rows the changelog decoded and images only the mirror kept (a key change's old key, a
/// change the changelog skipped) come out as one batch, in the order of each key's last
/// change, with soft-delete flags.
#[test]
fn a_round_takes_rows_from_the_changelog_and_from_its_own_images() {
    let table = table();
    let (a1, b2, c3, d4) = (
        row(&table, 1, "a"),
        row(&table, 2, "b"),
        row(&table, 3, "c"),
        row(&table, 4, "d"),
    );
    let changes: [Change; 5] = [
        (Op::Create, None, Some(&a1), true),
        (Op::Create, None, Some(&b2), true),
        (Op::Update, Some(&a1), Some(&c3), true), // key 1 becomes key 3
        (Op::Delete, Some(&b2), None, true),
        (Op::Create, None, Some(&d4), false), // the changelog holds it already
    ];
    let (_logged, round) = rounds(&table, &changes);
    let schema = Arc::new(Schema::new(Mirror::initial_fields(&table, true)));
    let (rows, deletes) = round.changes(&schema, "mirror t").unwrap();
    assert_eq!(
        rows.len(),
        1,
        "rows from two places are gathered into one batch"
    );
    let rows = &rows[0];
    let column = |name: &str| rows.column(schema.index_of(name).unwrap()).clone();
    assert_eq!(ids(rows), [1, 3, 2, 4]);
    let names: Vec<_> = column("name")
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    assert_eq!(names, ["a", "c", "b", "d"]);
    let positions: Vec<_> = column(batch::POSITION)
        .as_string::<i32>()
        .iter()
        .flatten()
        .map(str::to_owned)
        .collect();
    assert_eq!(positions, ["p2", "p2", "p3", "p4"]);
    let flags: Vec<_> = deletes.iter().flatten().collect();
    assert_eq!(flags, [true, false, true, false]);
    let deleted: Vec<_> = column(DELETED).as_boolean().iter().flatten().collect();
    assert_eq!(deleted, flags);
    let deleted_at = column(DELETED_AT);
    let deleted_at = deleted_at.as_primitive::<TimestampMicrosecondType>();
    let deleted_at: Vec<_> = deleted_at.iter().collect();
    assert_eq!(deleted_at, [Some(1_002_000), None, Some(1_003_000), None]);
}

/// A round whose changes are the changelog's rows one for one (new keys, a delete) is the
/// changelog's own batches, shared rather than copied, with soft-delete flags of their own.
#[test]
fn a_round_of_new_keys_is_the_changelogs_batches() {
    let table = table();
    let images: Vec<Vec<u8>> = (0..9000).map(|id| row(&table, id, "x")).collect();
    let mut changes: Vec<Change> = images
        .iter()
        .map(|image| (Op::Create, None, Some(image.as_slice()), true))
        .collect();
    let gone = row(&table, 9000, "gone");
    changes.push((Op::Delete, Some(&gone), None, true));
    let (logged, round) = rounds(&table, &changes);
    assert_eq!(
        logged.batches().len(),
        2,
        "the changelog gathers 8,192 rows a batch"
    );
    let schema = Arc::new(Schema::new(Mirror::initial_fields(&table, true)));
    let (rows, deletes) = round.changes(&schema, "mirror t").unwrap();
    assert_eq!(rows.len(), 2);
    for (mine, theirs) in rows.iter().zip(logged.batches()) {
        let (mine, theirs) = (mine.column_by_name("name"), theirs.column_by_name("name"));
        let buffer = |c: Option<&ArrayRef>| c.unwrap().to_data().buffers()[1].as_ptr();
        assert_eq!(buffer(mine), buffer(theirs), "shared, not copied");
    }
    let all: Vec<i64> = rows.iter().flat_map(ids).collect();
    assert_eq!(all, (0..=9000).collect::<Vec<_>>());
    assert_eq!(deletes.true_count(), 1);
    assert!(deletes.value(9000));
    let last = &rows[1];
    let deleted = last.column_by_name(DELETED).unwrap().as_boolean();
    assert_eq!(deleted.true_count(), 1);
    assert!(deleted.value(last.num_rows() - 1));
    let deleted_at = last.column_by_name(DELETED_AT).unwrap();
    let deleted_at = deleted_at.as_primitive::<TimestampMicrosecondType>();
    assert_eq!(deleted_at.value(last.num_rows() - 1), 10_000_000);
    assert_eq!(deleted_at.null_count(), last.num_rows() - 1);
}
