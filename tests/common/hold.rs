//! Holding a snapshot copy at a known point, so a test orders events instead of racing the
//! copy: a table lock the copy's next read has to wait for (seen waiting on the server), and
//! Headwater's own pause switch (`headwater backfill --pause`), which the running pipeline
//! confirms before the command returns.

use super::{mysql_admin, postgres_admin, Workdir};
use mysql_async::prelude::Queryable;
use std::time::{Duration, Instant};

const HOLD_TIMEOUT: Duration = Duration::from_secs(90);

/// Waits until a query of Headwater's that names `db` waits for a table lock on MariaDB.
pub async fn mysql_wait_for_blocked_read(db: &str) {
    let mut admin = mysql_admin().await;
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        let blocked: Option<String> = admin
            .exec_first(
                "SELECT CAST(INFO AS CHAR) FROM information_schema.PROCESSLIST
                 WHERE USER = 'headwater' AND STATE LIKE 'Waiting for table%lock'
                   AND INFO LIKE CONCAT('%', ?, '%') LIMIT 1",
                (db,),
            )
            .await
            .expect("read the process list");
        if let Some(query) = blocked {
            eprintln!("held: {query}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no Headwater query on {db} waited for the table lock within {HOLD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a query of Headwater's that names `schema` waits for a lock on PostgreSQL.
pub async fn postgres_wait_for_blocked_read(schema: &str) {
    let admin = postgres_admin().await;
    let deadline = Instant::now() + HOLD_TIMEOUT;
    loop {
        let blocked = admin
            .query(
                "SELECT query FROM pg_stat_activity
                 WHERE usename = 'headwater' AND wait_event_type = 'Lock'
                   AND query LIKE '%' || $1 || '%'",
                &[&schema],
            )
            .await
            .expect("read pg_stat_activity");
        if let Some(row) = blocked.first() {
            let query: String = row.get(0);
            eprintln!("held: {query}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no Headwater query on {schema} waited for the table lock within {HOLD_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connection ids of Headwater's queries naming `db` that wait for a table lock on MariaDB.
pub async fn mysql_blocked_reads(db: &str) -> Vec<u64> {
    mysql_admin()
        .await
        .exec(
            "SELECT ID FROM information_schema.PROCESSLIST
             WHERE USER = 'headwater' AND STATE LIKE 'Waiting for table%lock'
               AND INFO LIKE CONCAT('%', ?, '%')",
            (db,),
        )
        .await
        .expect("read the process list")
}

/// The backend pids of Headwater's queries naming `schema` that wait for a lock on PostgreSQL.
pub async fn postgres_blocked_reads(schema: &str) -> Vec<u64> {
    postgres_admin()
        .await
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE usename = 'headwater' AND wait_event_type = 'Lock'
               AND query LIKE '%' || $1 || '%'",
            &[&schema],
        )
        .await
        .expect("read pg_stat_activity")
        .iter()
        .map(|row| u64::from(row.get::<_, i32>(0).unsigned_abs()))
        .collect()
}

impl Workdir {
    /// `headwater backfill --pause` against the running pipeline: once this returns, the
    /// pipeline starts no new chunk.
    pub fn pause_backfills(&self) {
        let out = self.headwater(&["backfill", "--pause"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("paused: the running pipeline"),
            "the running pipeline confirms the pause: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `headwater backfill --resume` (for a running or a stopped pipeline).
    pub fn resume_backfills(&self) {
        let out = self.headwater(&["backfill", "--resume"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
