//! PostgreSQL when things go wrong: a dropped slot, an invalidated slot, a server restart, and
//! WAL retention while only unpublished tables are written.

mod common;

use apache_avro::types::Value as AvroValue;
use common::*;
use std::process::Command;
use std::time::Duration;

fn ids(work: &Workdir, stream: &str) -> Vec<i64> {
    read_stream(&work.lake(), stream)
        .iter()
        .map(|r| match image(r, "after").expect("after")["id"] {
            AvroValue::Int(n) => i64::from(n),
            AvroValue::Long(n) => n,
            ref other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_stops_with_how_to_recover() {
    let schema = unique("hw_pgdrop");
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater; CREATE TABLE {schema}.t (id int PRIMARY KEY); ALTER TABLE {schema}.t OWNER TO headwater"))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgdrop", &schema, "");
    work.catch_up();
    admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&work.slot()])
        .await
        .unwrap();
    admin
        .batch_execute(&format!("INSERT INTO {schema}.t VALUES (1)"))
        .await
        .unwrap();
    let output = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no longer exists") && stderr.contains("when_needed"),
        "{stderr}"
    );
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP PUBLICATION IF EXISTS {}",
            work.slot()
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_with_which_it_is_and_how_to_recover() {
    let server = PrivatePostgres::start(
        "max_slot_wal_keep_size = 1MB\nmax_wal_size = 64MB\nmin_wal_size = 32MB",
    );
    let admin = postgres_connect(&server.admin_url()).await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE junk (x text)")
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config_for(
        &server.admin_url(),
        "pginv",
        "public",
        "heartbeat_interval = \"0s\"",
    );
    let text = std::fs::read_to_string(work.config())
        .unwrap()
        .replace("include = [\"public.*\"]", "include = [\"public.t\"]");
    std::fs::write(work.config(), text).unwrap();
    work.catch_up();
    // Headwater is stopped; rows are written, and the slot falls further behind than
    // max_slot_wal_keep_size allows.
    admin
        .batch_execute("INSERT INTO t SELECT g FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let slot = work.slot();
    wait_until(
        Duration::from_secs(120),
        "the slot to be invalidated",
        || {
            let status = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "postgres", "-tAc"])
            .arg(format!(
                "INSERT INTO junk SELECT md5(g::text) FROM generate_series(1, 100000) g; SELECT pg_switch_wal(); CHECKPOINT; SELECT wal_status FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .output()
            .expect("psql");
            String::from_utf8_lossy(&status.stdout).contains("lost")
        },
    );
    let output = work.headwater(&["run", "--catch-up"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("was invalidated") && stderr.contains("max_slot_wal_keep_size"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pg_drop_replication_slot") && stderr.contains("when_needed"),
        "names the recovery: {stderr}"
    );

    // The recovery it names: a new slot, and the table copied again.
    let text = std::fs::read_to_string(work.config())
        .unwrap()
        .replace("snapshot = \"never\"", "snapshot = \"when_needed\"");
    std::fs::write(work.config(), text).unwrap();
    let output = work.catch_up();
    assert!(String::from_utf8_lossy(&output.stderr).contains("POSITION IS LOST"));
    assert_eq!(
        ids(&work, "pginv.public.t"),
        (1..=50).collect::<Vec<_>>(),
        "the rows written while the slot was lost came back with the copy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_and_repeats_nothing() {
    let server = PrivatePostgres::start("");
    let admin = postgres_connect(&server.admin_url()).await;
    admin
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config_for(&server.admin_url(), "pgrestart", "public", "");
    work.catch_up();
    let headwater = work.spawn();
    admin
        .batch_execute("INSERT INTO t SELECT generate_series(1, 500)")
        .await
        .unwrap();
    wait_until(Duration::from_secs(60), "the first rows", || {
        ids(&work, "pgrestart.public.t").len() == 500
    });
    drop(admin);
    server.stop();
    server.launch();
    let admin = postgres_connect(&server.admin_url()).await;
    admin
        .batch_execute("INSERT INTO t SELECT generate_series(501, 1000)")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(120),
        "the rows after the restart",
        || ids(&work, "pgrestart.public.t").len() >= 1000,
    );
    stop_gracefully(headwater);
    assert_eq!(
        ids(&work, "pgrestart.public.t"),
        (1..=1000).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_retained_by_the_slot_stays_bounded_while_unpublished_tables_are_written() {
    let schema = unique("hw_pgwal");
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION headwater; CREATE TABLE {schema}.t (id int PRIMARY KEY); ALTER TABLE {schema}.t OWNER TO headwater;
             CREATE TABLE {schema}_unpublished (x text)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgwal", &schema, "heartbeat_interval = \"1s\"");
    work.catch_up();
    let headwater = work.spawn();
    let slot = work.slot();
    let retained = || async {
        admin
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let wal_position = || async {
        admin
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let start = wal_position().await;
    let mut most_retained = 0;
    // about 30 MB of WAL into a table the publication does not cover, over a few seconds
    for _ in 0..10 {
        admin
            .batch_execute(&format!("INSERT INTO {schema}_unpublished SELECT repeat(md5(g::text), 8) FROM generate_series(1, 10000) g"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        most_retained = most_retained.max(retained().await);
    }
    let written = wal_position().await - start;
    assert!(
        written > 20_000_000,
        "the test wrote only {written} bytes of WAL"
    );
    assert!(
        most_retained < written / 2,
        "the slot held back up to {most_retained} of the {written} bytes written: it should follow the WAL"
    );
    eprintln!("WAL written {written} bytes; the slot held back at most {most_retained}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = retained().await;
    while last > 1_000_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        last = retained().await;
    }
    assert!(
        last <= 1_000_000,
        "the slot still holds {last} bytes of WAL behind the current position"
    );
    stop_gracefully(headwater);
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE; DROP TABLE {schema}_unpublished; DROP PUBLICATION IF EXISTS {slot}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_in_use_by_another_reader_is_reported_as_such() {
    let schema = unique("hw_pgbusy");
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater; CREATE TABLE {schema}.t (id int PRIMARY KEY); ALTER TABLE {schema}.t OWNER TO headwater"))
        .await
        .unwrap();
    let first = Workdir::new();
    first.postgres_config("pgbusy", &schema, "");
    first.catch_up();
    let running = first.spawn();
    let slot = first.slot();
    wait_until(
        Duration::from_secs(30),
        "the first reader to hold the slot",
        || {
            let out = Command::new("psql")
                .arg(endpoint("HEADWATER_POSTGRES_ADMIN_URL"))
                .args([
                    "-tAc",
                    &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim() == "t"
        },
    );
    // A second pipeline (its own state) pointed at the same slot.
    let second = Workdir::new();
    let config = std::fs::read_to_string(first.config()).unwrap().replace(
        &first.path().display().to_string(),
        &second.path().display().to_string(),
    );
    std::fs::write(second.config(), config).unwrap();
    // `run`, not `--catch-up`: a catch-up whose slot is already confirmed up to the log end
    // has nothing to read and would end before asking for the slot (an idle-database race)
    let mut child = Command::new(env!("CARGO_BIN_EXE_headwater"))
        .args(["run", "--config"])
        .arg(second.config())
        .env("HEADWATER_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn headwater");
    let mut status = None;
    wait_until(
        Duration::from_secs(120),
        "the second pipeline to give up on the busy slot",
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{stderr}");
    assert!(
        stderr.contains("is in use by another process") && stderr.contains("its own source.slot"),
        "{stderr}"
    );
    stop_gracefully(running);
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
async fn check_names_tables_whose_changes_would_lack_keys() {
    let schema = unique("hw_pgcheck");
    let admin = postgres_admin().await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema} AUTHORIZATION headwater; CREATE TABLE {schema}.keyless (x int); CREATE TABLE {schema}.keyed (id int PRIMARY KEY);
             ALTER TABLE {schema}.keyless OWNER TO headwater; ALTER TABLE {schema}.keyed OWNER TO headwater"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgcheck", &schema, "");
    let output = work.headwater(&["check"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "warnings do not fail the check: {stdout}"
    );
    assert!(
        stdout.contains(&format!("{schema}.keyless has no primary key")),
        "{stdout}"
    );
    assert!(
        stdout.contains("REPLICA IDENTITY FULL"),
        "names the fix: {stdout}"
    );
    assert!(!stdout.contains("keyed has no primary key"), "{stdout}");
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
