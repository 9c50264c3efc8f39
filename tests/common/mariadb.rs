//! The shared test MariaDB, configs that read it, and MariaDB servers of a test's own.

use super::*;

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

impl Workdir {
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
