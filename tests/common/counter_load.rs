//! A write load whose history can be checked record by record: rows are inserted with `v = 0`
//! and every update adds one, in transactions of varied size (every 25th large enough to span
//! lake commits). A lake holding each change exactly once, in commit order per row, reads as
//! inserts at 0 and updates counting up by one, ending where the table ends.

use super::*;
use mysql_async::prelude::Queryable;
use rand::Rng;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The size of the next transaction: mostly small, every 25th 3,000 rows.
fn transaction_size(transactions: u64) -> i64 {
    if transactions % 25 == 24 {
        3000
    } else {
        rand::rng().random_range(1..20)
    }
}

/// The load on `db.t (id BIGINT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(100))` until `stop`;
/// returns the number of transactions written.
pub async fn mysql_counter_load(db: String, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = mysql_admin().await;
    let mut next_id = 0i64;
    let mut transactions = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let size = transaction_size(transactions);
        let mut tx = conn
            .start_transaction(Default::default())
            .await
            .expect("begin");
        let values: Vec<String> = (next_id..next_id + size)
            .map(|id| format!("({id}, 0, REPEAT('p', 50))"))
            .collect();
        tx.query_drop(format!(
            "INSERT INTO `{db}`.t (id, v, pad) VALUES {}",
            values.join(",")
        ))
        .await
        .expect("insert");
        next_id += size;
        if next_id > 10 {
            let low = rand::rng().random_range(0..next_id - 10);
            tx.query_drop(format!(
                "UPDATE `{db}`.t SET v = v + 1 WHERE id BETWEEN {low} AND {}",
                low + 5
            ))
            .await
            .expect("update");
        }
        tx.commit().await.expect("commit");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    transactions
}

/// The same load on PostgreSQL's `schema.t (id bigint PRIMARY KEY, v int NOT NULL, pad text)`.
pub async fn postgres_counter_load(schema: String, stop: Arc<AtomicBool>) -> u64 {
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    let mut next_id = 0i64;
    let mut transactions = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let size = transaction_size(transactions);
        let mut sql = format!(
            "BEGIN; INSERT INTO {schema}.t (id, v, pad) SELECT g, 0, repeat('p', 50) FROM generate_series({next_id}, {}) g;",
            next_id + size - 1
        );
        next_id += size;
        if next_id > 10 {
            let low = rand::rng().random_range(0..next_id - 10);
            sql.push_str(&format!(
                "UPDATE {schema}.t SET v = v + 1 WHERE id BETWEEN {low} AND {};",
                low + 5
            ));
        }
        sql.push_str("COMMIT;");
        client.batch_execute(&sql).await.expect("load transaction");
        transactions += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    transactions
}

/// The rows `(id, v)` of the source table now, from MariaDB.
pub async fn mysql_counter_rows(db: &str) -> Vec<(i64, i64)> {
    mysql_admin()
        .await
        .query(format!("SELECT id, v FROM `{db}`.t"))
        .await
        .expect("read the source table")
}

/// The rows `(id, v)` of the source table now, from PostgreSQL.
pub async fn postgres_counter_rows(schema: &str) -> Vec<(i64, i64)> {
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .query(&format!("SELECT id, v FROM {schema}.t"), &[])
        .await
        .expect("read the source table")
        .iter()
        .map(|row| (row.get::<_, i64>(0), i64::from(row.get::<_, i32>(1))))
        .collect()
}

/// Asserts the lake's records of the load hold every change exactly once, in order, and end
/// where the source table ends (`rows`).
pub fn assert_each_change_once(records: &[AvroValue], rows: &[(i64, i64)]) {
    let mut last_v: HashMap<i64, i64> = HashMap::new();
    for record in records {
        let after = image(record, "after").expect("inserts and updates have an after-image");
        let (id, v) = (avro_int(&after["id"]), avro_int(&after["v"]));
        match op(record).as_str() {
            "c" => {
                assert_eq!(v, 0, "row {id} inserted with v={v}");
                assert!(
                    last_v.insert(id, 0).is_none(),
                    "row {id} inserted twice: a duplicate"
                );
            }
            "u" => {
                let before = last_v
                    .get(&id)
                    .copied()
                    .unwrap_or_else(|| panic!("update of row {id} before its insert"));
                assert_eq!(
                    v,
                    before + 1,
                    "row {id}: update to v={v} after v={before}: lost or repeated change"
                );
                last_v.insert(id, v);
            }
            other => panic!("unexpected op {other}"),
        }
    }
    assert_eq!(
        rows.len(),
        last_v.len(),
        "rows in the table vs rows in the lake"
    );
    for (id, v) in rows {
        assert_eq!(
            last_v.get(id),
            Some(v),
            "row {id}: lake ends at {:?}, table has {v}",
            last_v.get(id)
        );
    }
}

/// Panics with what it said when `headwater` has exited.
pub fn assert_still_running(headwater: &mut std::process::Child) {
    if let Ok(Some(status)) = headwater.try_wait() {
        let mut stderr = String::new();
        use std::io::Read;
        if let Some(mut pipe) = headwater.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        panic!("headwater exited early with {status}: {stderr}");
    }
}

/// Whether the lake's records end where the source table ends (each row's last `v`), without
/// judging duplicates: for waiting until a running pipeline has caught up.
pub fn lake_reached(records: &[AvroValue], rows: &[(i64, i64)]) -> bool {
    let mut last_v: HashMap<i64, i64> = HashMap::new();
    for record in records {
        if let Some(after) = image(record, "after") {
            last_v.insert(avro_int(&after["id"]), avro_int(&after["v"]));
        }
    }
    last_v.len() == rows.len() && rows.iter().all(|(id, v)| last_v.get(id) == Some(v))
}
