//! A PostgreSQL 18 primary with a physical standby of its own (PostgreSQL 17+ is needed for
//! failover slots), for tests that kill the primary and promote the standby. The binaries are
//! the ones `scripts/services.sh start postgres18` unpacks (`HEADWATER_POSTGRES18_BIN`); the
//! servers run as the `postgres` OS user in a temporary directory, on free loopback ports.

use super::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The physical slot the standby streams through, named in the primary's
/// `synchronized_standby_slots`.
pub const STANDBY_SLOT: &str = "hw_standby";

pub struct PgNode {
    bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
}

pub struct PgPair {
    _dir: tempfile::TempDir,
    pub primary: PgNode,
    pub standby: PgNode,
}

fn run(what: &str, command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

impl PgNode {
    fn append_conf(&self, lines: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("postgresql.conf");
        file.write_all(lines.as_bytes())
            .expect("write postgresql.conf");
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        run(
            &format!("pg_ctl {args:?} on port {}", self.port),
            as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(args),
        )
    }

    pub fn start(&self) {
        let log = self.data.join("server.log");
        self.pg_ctl(&[
            "-w",
            "-t",
            "120",
            "-l",
            log.to_str().expect("path"),
            "start",
        ]);
    }

    /// The primary's loss: no shutdown checkpoint, connections cut.
    pub fn kill(&self) {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
    }

    pub fn promote(&self) {
        self.pg_ctl(&["-w", "-t", "120", "promote"]);
    }

    /// SQL as the superuser over the node's Unix socket.
    pub fn psql(&self, sql: &str) -> String {
        let output = run(
            &format!("psql on port {}: {sql}", self.port),
            as_postgres(&self.bin.join("psql"))
                .args([
                    "-X",
                    "-q",
                    "-tA",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .arg("-h")
                .arg(&self.data)
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-c")
                .arg(sql),
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl PgPair {
    /// initdb, the primary started with a physical slot for the standby, `pg_basebackup` of it,
    /// and the standby streaming with `sync_replication_slots` and `hot_standby_feedback` on.
    pub fn start() -> PgPair {
        let bin = PathBuf::from(std::env::var("HEADWATER_POSTGRES18_BIN").expect(
            "HEADWATER_POSTGRES18_BIN is not set; run `scripts/services.sh start postgres18` and `source .services/env.sh`",
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        // the postgres OS user must reach the data directories inside
        run(
            "chmod the pair's directory",
            Command::new("chmod").arg("755").arg(dir.path()),
        );
        let primary = PgNode {
            bin: bin.clone(),
            data: dir.path().join("primary"),
            port: free_port(),
        };
        let standby = PgNode {
            bin: bin.clone(),
            data: dir.path().join("standby"),
            port: free_port(),
        };
        for node in [&primary, &standby] {
            std::fs::create_dir(&node.data).expect("data directory");
            run(
                "chown the data directory",
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&node.data),
            );
            run(
                "chmod the data directory",
                Command::new("chmod").arg("700").arg(&node.data),
            );
        }
        run(
            "initdb",
            as_postgres(&bin.join("initdb"))
                .args(["-U", "postgres", "--auth=trust", "-D"])
                .arg(&primary.data),
        );
        std::fs::write(
            primary.data.join("pg_hba.conf"),
            "local all all trust\nlocal replication all trust\n\
             host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("pg_hba.conf");
        primary.append_conf(&format!(
            "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_replication_slots = 10\nmax_wal_senders = 10\n\
             synchronized_standby_slots = '{STANDBY_SLOT}'\n",
            primary.port,
            primary.data.display()
        ));
        primary.start();
        let init = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/postgres/init.sql"),
        )
        .expect("docker/postgres/init.sql");
        primary.psql(&init);
        primary.psql("ALTER ROLE postgres PASSWORD 'postgres'");
        primary.psql(&format!(
            "SELECT pg_create_physical_replication_slot('{STANDBY_SLOT}')"
        ));
        run(
            "pg_basebackup",
            as_postgres(&bin.join("pg_basebackup"))
                .arg("-d")
                .arg(format!(
                    "host={} port={} user=postgres dbname=postgres",
                    primary.data.display(),
                    primary.port
                ))
                .args(["-R", "-S", STANDBY_SLOT, "-X", "stream", "-D"])
                .arg(&standby.data),
        );
        // the standby's own port and socket; once promoted it must not wait for a standby of
        // its own (the copied synchronized_standby_slots names the slot only the old primary has)
        standby.append_conf(&format!(
            "port = {}\nunix_socket_directories = '{}'\nsync_replication_slots = on\n\
             hot_standby_feedback = on\nsynchronized_standby_slots = ''\n",
            standby.port,
            standby.data.display()
        ));
        standby.start();
        let pair = PgPair {
            _dir: dir,
            primary,
            standby,
        };
        pair.wait_for(
            &pair.primary,
            "the standby streaming",
            &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{STANDBY_SLOT}'"),
            "t",
        );
        pair
    }

    /// Waits until `sql` on `node` returns `expected`.
    pub fn wait_for(&self, node: &PgNode, what: &str, sql: &str, expected: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = node.psql(sql);
            if got == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: `{sql}` still returns {got:?}, not {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// source.url naming both hosts, the primary first.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{},{}/postgres",
            self.primary.address(),
            self.standby.address()
        )
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        for node in [&self.primary, &self.standby] {
            if node.data.join("postmaster.pid").exists() {
                let _ = as_postgres(&node.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&node.data)
                    .args(["-m", "immediate", "stop"])
                    .output();
            }
        }
    }
}
