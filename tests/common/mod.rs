//! Helpers for tests against the real servers started by `scripts/services.sh`.
#![allow(dead_code)]

pub mod counter_load;
pub mod delta;
pub mod delta_load;
mod hold;
pub mod pg_pair;
pub mod proxy;
#[allow(unused_imports)]
pub use hold::*;

use apache_avro::types::Value as AvroValue;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The endpoints `scripts/services.sh` prints; read from the environment, or from the
/// `.services/env.sh` it leaves behind. Missing services fail the test with the fix.
pub fn endpoint(var: &str) -> String {
    if let Ok(value) = std::env::var(var) {
        return value;
    }
    let env_file = Path::new(env!("CARGO_MANIFEST_DIR")).join(".services/env.sh");
    if let Ok(text) = std::fs::read_to_string(&env_file) {
        for line in text.lines() {
            if let Some((key, value)) = line.trim_start_matches("export ").split_once('=') {
                if key == var {
                    return value.to_string();
                }
            }
        }
    }
    panic!("{var} is not set: start the test services first with `scripts/services.sh start` (or run the whole suite with `scripts/test.sh`)");
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or earlier run) uses: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Tests of the change stream start without a snapshot unless they ask for one.
fn default_snapshot(extra_source: &str) -> &'static str {
    if extra_source.contains("snapshot =") {
        ""
    } else {
        "snapshot = \"never\""
    }
}

/// A server_id no other running test uses.
pub fn unique_server_id() -> u32 {
    // Its own counter, never wrapped: two pipelines of one test process with one server_id
    // disconnect each other (error 4052), which is what an earlier `% 8` caused.
    static SERVER_IDS: AtomicU32 = AtomicU32::new(0);
    10_000 + (std::process::id() % 100_000) * 1_000 + SERVER_IDS.fetch_add(1, Ordering::SeqCst)
}

/// A working directory for one pipeline: config, state and lake.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn lake(&self) -> PathBuf {
        self.dir.path().join("lake")
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("headwater.toml")
    }

    /// Writes a MySQL → lake config capturing `db.*` from the shared test MariaDB.
    pub fn mysql_config(&self, server_name: &str, db: &str, extra_source: &str, extra_sink: &str) {
        self.mysql_config_for(
            &endpoint("HEADWATER_MYSQL_URL"),
            server_name,
            db,
            extra_source,
            extra_sink,
        );
    }

    /// Writes a MySQL → lake config capturing `db.*` from the server at `url`.
    pub fn mysql_config_for(
        &self,
        url: &str,
        server_name: &str,
        db: &str,
        extra_source: &str,
        extra_sink: &str,
    ) {
        let text = format!(
            r#"
[source]
kind = "mysql"
url = "{url}"
name = "{server_name}"
server_id = {server_id}
include = ["{db}.*"]
{snapshot}
{extra_source}

[sink]
kind = "lake"
path = "{lake}"
commit_interval = "200ms"
{extra_sink}

[state]
path = "{state}"
"#,
            server_id = unique_server_id(),
            snapshot = default_snapshot(extra_source),
            lake = self.lake().display(),
            state = self.dir.path().join("state").display(),
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    /// Runs `headwater ARGS --config <config>` to completion.
    pub fn headwater(&self, args: &[&str]) -> Output {
        let output = Command::new(env!("CARGO_BIN_EXE_headwater"))
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("HEADWATER_LOG", "info")
            .output()
            .expect("run headwater");
        output
    }

    /// `headwater run --catch-up`, asserting success.
    pub fn catch_up(&self) -> Output {
        let output = self.headwater(&["run", "--catch-up"]);
        assert!(
            output.status.success(),
            "headwater run --catch-up failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Starts `headwater run` in the background.
    pub fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_headwater"))
            .args(["run", "--config"])
            .arg(self.config())
            .env("HEADWATER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn headwater")
    }
}

/// A test that fails before it stops its pipeline must not leave that process running (it
/// would hold its slot or binlog dump and load the servers for every later test): on drop,
/// every headwater process whose command line names this directory is killed.
impl Drop for Workdir {
    fn drop(&mut self) {
        let dir = self.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline);
            let mut args = cmdline.split('\0');
            let is_headwater = args.next().is_some_and(|exe| exe.ends_with("/headwater"));
            if is_headwater && args.any(|arg| arg.starts_with(&dir)) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

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

/// Waits until `condition` holds, polling; fails after `timeout` with `what`.
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An administrative connection to the test MariaDB.
pub async fn mysql_admin() -> mysql_async::Conn {
    let url = endpoint("HEADWATER_MYSQL_ADMIN_URL");
    let opts = mysql_async::Opts::from_url(&url).expect("admin url");
    mysql_async::Conn::new(opts).await.unwrap_or_else(|e| {
        panic!("cannot connect to the test MariaDB at {url} ({e}); start it with `scripts/services.sh start`")
    })
}

/// A MariaDB server of one test's own, for tests that stop, purge or fail over a server.
/// Uses the same settings as `scripts/services.sh` (`docker/mariadb/headwater.cnf`).
pub struct PrivateMariadb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub server_id: u32,
    extra_args: Vec<String>,
    process: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl PrivateMariadb {
    pub fn start(server_id: u32) -> Self {
        Self::start_with(server_id, |_| Vec::new())
    }

    /// Starts with extra server options, computed from the server's directory.
    pub fn start_with(server_id: u32, extra_args: impl FnOnce(&Path) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let extra_args = extra_args(dir.path());
        // Servers bootstrapping in parallel collide in a shared /tmp: each gets its own.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let install = Command::new("mariadb-install-db")
            .env("TMPDIR", &tmp)
            .args(["--no-defaults", "--user=root", "--auth-root-authentication-method=normal", "--skip-test-db"])
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .output()
            .expect("mariadb-install-db (install mariadb-server, or run scripts/services.sh start once)");
        assert!(
            install.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&install.stderr)
        );
        let mut server = PrivateMariadb {
            dir,
            port: free_port(),
            server_id,
            extra_args,
            process: None,
        };
        server.launch();
        let init = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/mariadb/init.sql"),
        )
        .expect("init.sql");
        server.sql(&init);
        server.sql("CREATE USER 'hwadmin'@'127.0.0.1' IDENTIFIED BY 'hwadmin'; GRANT ALL ON *.* TO 'hwadmin'@'127.0.0.1' WITH GRANT OPTION;");
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Starts mariadbd on the existing data directory and waits until it answers.
    pub fn launch(&mut self) {
        let data = self.dir.path().join("data");
        let child = Command::new("/usr/sbin/mariadbd")
            .arg(format!(
                "--defaults-file={}",
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("docker/mariadb/headwater.cnf")
                    .display()
            ))
            .args(["--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                self.dir.path().join("err").display()
            ))
            .arg(format!("--server-id={}", self.server_id))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        self.process = Some(child);
        wait_until(
            Duration::from_secs(60),
            "the private MariaDB to accept connections",
            || {
                Command::new("mariadb")
                    .args(["--no-defaults", "-uroot"])
                    .arg(format!("--socket={}", self.socket().display()))
                    .args(["-e", "SELECT 1"])
                    .output()
                    .is_ok_and(|o| o.status.success())
            },
        );
    }

    /// Shuts the server down cleanly and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Runs SQL through the command-line client as root, panicking with the server's message.
    pub fn sql(&self, sql: &str) -> String {
        let output = Command::new("mariadb")
            .args([
                "--no-defaults",
                "-uroot",
                "-N",
                "-B",
                "--default-character-set=utf8mb4",
            ])
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-e", sql])
            .output()
            .expect("mariadb client");
        assert!(
            output.status.success(),
            "SQL failed: {sql}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Purges every binlog before the current one, once no replica thread holds them.
    pub fn purge_binlogs(&self) {
        wait_until(
            Duration::from_secs(30),
            "binlog dump threads to end",
            || {
                self.sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'") == "0"
            },
        );
        let current = self
            .sql("SHOW MASTER STATUS")
            .split_whitespace()
            .next()
            .expect("a binlog file")
            .to_string();
        // MariaDB keeps a file until the engine has checkpointed its transactions: retry.
        wait_until(
            Duration::from_secs(30),
            "the older binlogs to be purged",
            || {
                self.sql(&format!("PURGE BINARY LOGS TO '{current}'"));
                self.sql("SHOW BINARY LOGS").split_whitespace().next() == Some(current.as_str())
            },
        );
    }

    /// The URL Headwater connects with.
    pub fn url(&self) -> String {
        format!("mysql://headwater:headwater@127.0.0.1:{}", self.port)
    }

    /// Makes this server a GTID replica of `primary`, from `primary`'s current position on
    /// (the two servers' own setup statements are not replicated).
    pub fn replicate_from(&self, primary: &PrivateMariadb) {
        let position = primary.sql("SELECT @@gtid_binlog_pos");
        self.sql(&format!(
            "RESET MASTER; SET GLOBAL gtid_slave_pos = '{position}'; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='headwater', MASTER_PASSWORD='headwater', MASTER_USE_GTID=slave_pos; START SLAVE;",
            primary.port
        ));
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An administrative connection to the test PostgreSQL.
pub async fn postgres_admin() -> tokio_postgres::Client {
    postgres_connect(&endpoint("HEADWATER_POSTGRES_ADMIN_URL")).await
}

pub async fn postgres_connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url} ({e}); start it with `scripts/services.sh start`"));
    tokio::spawn(connection);
    client
}

impl Workdir {
    /// Writes a PostgreSQL → lake config capturing `schema.*` through its own slot and publication.
    pub fn postgres_config_for(
        &self,
        url: &str,
        server_name: &str,
        schema: &str,
        extra_source: &str,
    ) {
        let slot = unique("hw_slot");
        let snapshot = default_snapshot(extra_source);
        let text = format!(
            r#"
[source]
kind = "postgres"
url = "{url}"
name = "{server_name}"
slot = "{slot}"
publication = "{slot}"
include = ["{schema}.*"]
status_interval = "200ms"
{snapshot}
{extra_source}

[sink]
kind = "lake"
path = "{lake}"
commit_interval = "200ms"

[state]
path = "{state}"
"#,
            lake = self.lake().display(),
            state = self.dir.path().join("state").display(),
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    pub fn postgres_config(&self, server_name: &str, schema: &str, extra_source: &str) {
        self.postgres_config_for(
            &endpoint("HEADWATER_POSTGRES_URL"),
            server_name,
            schema,
            extra_source,
        );
    }

    /// The slot and publication names of this workdir's PostgreSQL config.
    pub fn slot(&self) -> String {
        let text = std::fs::read_to_string(self.config()).expect("config");
        text.lines()
            .find_map(|l| l.strip_prefix("slot = \""))
            .map(|s| s.trim_end_matches('"').to_string())
            .expect("a slot in the config")
    }
}

/// A PostgreSQL server of one test's own (for invalidating or dropping slots, restarts).
pub struct PrivatePostgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePostgres {
    const BIN: &'static str = "/usr/lib/postgresql/15/bin";

    /// `settings` are extra `postgresql.conf` lines.
    pub fn start(settings: &str) -> Self {
        Self::start_with(
            settings,
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
            |_| String::new(),
        )
    }

    /// With `hba` as pg_hba.conf's TCP lines and `prepare` writing files into the data directory
    /// (after initdb) and returning more settings.
    pub fn start_with(settings: &str, hba: &str, prepare: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let chown = |path: &Path| {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(path)
                .status()
                .expect("chown");
        };
        Command::new("chmod")
            .args(["755"])
            .arg(dir.path())
            .status()
            .expect("chmod");
        chown(dir.path());
        let init = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/initdb", Self::BIN))
            .args(["-U", "postgres", "--auth=trust", "-D"])
            .arg(&data)
            .output()
            .expect("initdb");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let server = PrivatePostgres {
            dir,
            port: free_port(),
        };
        let conf = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/postgres/headwater.conf"),
        )
        .unwrap();
        let prepared = prepare(&data);
        let extra = format!(
            "{conf}\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n{settings}\n{prepared}\n",
            server.port,
            data.display()
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, extra.as_bytes()).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            format!("local all all trust\n{hba}"),
        )
        .unwrap();
        chown(&data);
        server.pg_ctl("start");
        server
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", Self::BIN))
            .args(["-D"])
            .arg(&data)
            .args(["-l"])
            .arg(data.join("server.log"))
            .args(["-w", "-m", "fast", action])
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl {action}");
    }

    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn launch(&self) {
        self.pg_ctl("start");
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{}/pg_ctl", Self::BIN))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A test CA (`ca.pem`) and a server certificate for 127.0.0.1 (`server.pem`, `server-key.pem`)
/// in `dir`, made with the openssl command.
pub fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=headwater test CA",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server-key.pem",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

impl Workdir {
    /// Replaces the `[sink]` section with a Kafka sink.
    pub fn use_kafka_sink(&self, brokers: &str, topic_prefix: &str, format: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let start = text.find("[sink]").expect("a sink section");
        let end = text.find("[state]").expect("a state section");
        let registry = if format == "avro" {
            format!(
                "schema_registry = \"{}\"\n",
                endpoint("HEADWATER_SCHEMA_REGISTRY")
            )
        } else {
            String::new()
        };
        let sink = format!(
            "[sink]\nkind = \"kafka\"\nbrokers = \"{brokers}\"\ntopic_prefix = \"{topic_prefix}\"\nformat = \"{format}\"\n{registry}partitions = 3\n\n"
        );
        std::fs::write(
            self.config(),
            format!("{}{sink}{}", &text[..start], &text[end..]),
        )
        .expect("config");
    }
}

/// One message read back by `tests/kafka_consume.py` (confluent-kafka + AvroDeserializer).
#[derive(Debug, serde::Deserialize)]
pub struct Consumed {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: serde_json::Value,
    pub value: serde_json::Value,
    pub headers: HashMap<String, String>,
}

/// Every message of `topics`, read with an independent consumer.
pub fn consume(brokers: &str, format: &str, topics: &[&str]) -> Vec<Consumed> {
    try_consume(brokers, format, topics).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`consume`], with the consumer's failure as an error (for polling a broker that is
/// coming back).
pub fn try_consume(brokers: &str, format: &str, topics: &[&str]) -> Result<Vec<Consumed>, String> {
    try_consume_with(brokers, format, topics, "{}")
}

/// As [`try_consume`], with extra librdkafka settings (a JSON object: SASL, TLS).
pub fn try_consume_with(
    brokers: &str,
    format: &str,
    topics: &[&str],
    client_config: &str,
) -> Result<Vec<Consumed>, String> {
    let registry = if format == "avro" {
        endpoint("HEADWATER_SCHEMA_REGISTRY")
    } else {
        "json".to_string()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka_consume.py");
    let output = Command::new("python3")
        .arg(script)
        .args([brokers, &registry, "3"])
        .args(topics)
        .env("KAFKA_CLIENT_CONFIG", client_config)
        .output()
        .expect("python3");
    if !output.status.success() {
        return Err(format!(
            "the consumer failed (pip install 'confluent-kafka[avro,schemaregistry]'; scripts/test.sh does): {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect())
}

/// A Kafka-protocol broker (tansu, memory storage) of one test's own, which a test can stop
/// (SIGSTOP: the broker stops answering, connections hang) and continue.
pub struct PrivateBroker {
    pub dir: tempfile::TempDir,
    pub port: u16,
    process: Option<Child>,
}

impl PrivateBroker {
    pub fn start() -> Self {
        let mut broker = Self::not_started();
        broker.launch();
        broker
    }

    /// A broker whose port is chosen but which does not run until `launch`.
    pub fn not_started() -> Self {
        PrivateBroker {
            dir: tempfile::tempdir().expect("temp dir"),
            port: free_port(),
            process: None,
        }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn launch(&mut self) {
        self.launch_with(&["--storage-engine", "memory://tansu/"]);
    }

    /// A broker that requires SASL/SCRAM-SHA-512 from `user`: tansu keeps users in its storage,
    /// so the user is created on an open broker with a file store, which then restarts with
    /// authentication on.
    pub fn start_with_scram(user: &str, password: &str) -> Self {
        let mut broker = Self::not_started();
        // relative to the broker's working directory, its own temporary directory
        let store = "sqlite://broker.db".to_string();
        broker.launch_with(&["--storage-engine", &store]);
        let created = Command::new(endpoint("HEADWATER_TANSU"))
            .args(["user", "create", "--mechanism", "scram512", "--broker"])
            .arg(format!("tcp://127.0.0.1:{}", broker.port))
            .args([user, password])
            .output()
            .expect("tansu user create");
        assert!(
            created.status.success(),
            "tansu user create: {}",
            String::from_utf8_lossy(&created.stderr)
        );
        if let Some(mut child) = broker.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(Duration::from_secs(10), "the open broker to stop", || {
            std::net::TcpStream::connect(("127.0.0.1", broker.port)).is_err()
        });
        broker.launch_with(&["--storage-engine", &store, "--authentication"]);
        broker
    }

    fn launch_with(&mut self, options: &[&str]) {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(endpoint("HEADWATER_TANSU"))
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(options)
            .args(["--cluster-id", "headwater-test"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu (scripts/services.sh start kafka finds or builds it)");
        self.process = Some(child);
        wait_until(Duration::from_secs(30), "the broker to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// Stops the broker process where it is (SIGSTOP): it answers nothing until `resume`.
    pub fn pause(&self) {
        if let Some(child) = &self.process {
            Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status()
                .expect("kill -STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(child) = &self.process {
            Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status()
                .expect("kill -CONT");
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Workdir {
    /// `headwater run --catch-up` under `/usr/bin/time`, asserting success; the peak RSS in KiB.
    pub fn catch_up_measuring_peak_rss(&self) -> u64 {
        let time_file = self.path().join("time");
        let status = Command::new("/usr/bin/time")
            .args(["-f", "%M", "-o"])
            .arg(&time_file)
            .arg(env!("CARGO_BIN_EXE_headwater"))
            .args(["run", "--catch-up", "--config"])
            .arg(self.config())
            .env("HEADWATER_LOG", "warn")
            .status()
            .expect("run headwater under /usr/bin/time (apt-get install time)");
        assert!(status.success());
        std::fs::read_to_string(&time_file)
            .expect("time output")
            .trim()
            .parse()
            .expect("peak RSS")
    }
}

/// Stops a running headwater with SIGTERM and asserts it flushed and exited 0.
pub fn stop_gracefully(mut headwater: Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(headwater.id().to_string())
        .status()
        .expect("kill -TERM");
    // read what it said while waiting, so a full pipe never blocks it
    let mut stderr = String::new();
    if let Some(mut pipe) = headwater.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let status = headwater.wait().expect("reap headwater");
    assert!(
        status.success(),
        "SIGTERM ends headwater with exit 0, got {status}; it said:\n{}",
        stderr
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
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
