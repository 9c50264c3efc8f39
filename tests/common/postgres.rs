//! The shared test PostgreSQL, configs that read it, and PostgreSQL servers of a test's own.

use super::*;

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

/// Drops what a PostgreSQL pipeline test made: the workdir's slot and publication, `schema`.
pub async fn postgres_cleanup(schema: &str, work: &Workdir) {
    let admin = postgres_admin().await;
    let slot = work.slot();
    let _ = admin
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await;
    let _ = admin
        .batch_execute(&format!(
            "DROP SCHEMA {schema} CASCADE; DROP PUBLICATION IF EXISTS {slot}"
        ))
        .await;
}

/// A new schema owned by the pipeline's role (so it may create the publication), and a
/// connection as that role to fill it.
pub async fn postgres_owned_schema(prefix: &str) -> (String, tokio_postgres::Client) {
    let schema = unique(prefix);
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let owner = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    (schema, owner)
}
