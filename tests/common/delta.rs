//! Delta sink helpers: a config section, and the tables read back by readers Headwater did not
//! write (python `deltalake` and DuckDB's Delta extension, through `tests/delta_read.py`).

use super::Workdir;
use serde_json::Value as Json;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub const READERS: [&str; 2] = ["deltalake", "duckdb"];
/// The readers of an Iceberg table (a `iceberg:` URI, see [`Workdir::iceberg_table`]).
pub const ICEBERG_READERS: [&str; 2] = ["pyiceberg", "duckdb-iceberg"];

/// A lakehouse sink's table format, for tests both run.
#[derive(Clone, Copy, Debug)]
pub enum Lakehouse {
    Delta,
    Iceberg,
}

impl Lakehouse {
    /// Replaces the `[sink]` section with a sink of this format (plus `extra`).
    pub fn use_sink(self, work: &Workdir, extra: &str) {
        match self {
            Lakehouse::Delta => work.use_delta_sink(None, extra),
            Lakehouse::Iceberg => work.use_iceberg_sink(None, extra),
        }
    }

    /// A table as the readers name it.
    pub fn table(self, work: &Workdir, kind: &str, stream: &str) -> String {
        match self {
            Lakehouse::Delta => work.delta_table(kind, stream),
            Lakehouse::Iceberg => work.iceberg_table(kind, stream),
        }
    }

    /// The directory a table's files are under.
    pub fn table_dir(self, work: &Workdir, kind: &str, stream: &str) -> PathBuf {
        match self {
            Lakehouse::Delta => PathBuf::from(work.delta_table(kind, stream)),
            Lakehouse::Iceberg => {
                let mut dir = work.iceberg_dir().join(kind);
                for part in stream.split('.') {
                    dir = dir.join(part);
                }
                dir
            }
        }
    }

    /// Replaces the `[sink]` section with a sink of this format on S3 at `location`
    /// (`s3://bucket/prefix`; an Iceberg catalog stays a local file).
    pub fn use_s3_sink(self, work: &Workdir, location: &str) {
        match self {
            Lakehouse::Delta => work.use_delta_sink(Some(location), ""),
            Lakehouse::Iceberg => {
                let catalog = work.iceberg_dir().join("catalog.db");
                std::fs::create_dir_all(work.iceberg_dir()).expect("catalog directory");
                let extra = format!("catalog_path = \"{}\"", catalog.display());
                work.use_iceberg_sink(Some(location), &extra)
            }
        }
    }

    /// A table of a sink at `location` on S3, as the readers name it.
    pub fn s3_table(self, work: &Workdir, location: &str, kind: &str, stream: &str) -> String {
        match self {
            Lakehouse::Delta => format!("{location}/{kind}/{stream}"),
            Lakehouse::Iceberg => work.iceberg_table(kind, stream),
        }
    }

    /// The format as `check` names it.
    pub fn title(self) -> &'static str {
        match self {
            Lakehouse::Delta => "Delta",
            Lakehouse::Iceberg => "Iceberg",
        }
    }

    pub fn readers(self) -> [&'static str; 2] {
        match self {
            Lakehouse::Delta => READERS,
            Lakehouse::Iceberg => ICEBERG_READERS,
        }
    }

    /// The reader that lists a table's live files.
    pub fn files_reader(self) -> &'static str {
        match self {
            Lakehouse::Delta => "files",
            Lakehouse::Iceberg => "iceberg-files",
        }
    }
}

/// The two readers of the table at `uri`, Delta or Iceberg.
pub fn readers_of(uri: &str) -> [&'static str; 2] {
    if uri.starts_with("iceberg:") {
        ICEBERG_READERS
    } else {
        READERS
    }
}

/// The reader a test reads `uri` with when one is enough.
pub fn main_reader(uri: &str) -> &'static str {
    readers_of(uri)[0]
}

/// A Delta table as a reader sees it: column names and rows (sorted, values rendered as text
/// where a number could lose digits).
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct DeltaRows {
    pub version: Option<i64>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Json>>,
}

impl DeltaRows {
    pub fn column(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", self.columns))
    }

    /// The rows projected on `names`, sorted.
    pub fn project(&self, names: &[&str]) -> Vec<Vec<Json>> {
        let indexes: Vec<usize> = names.iter().map(|n| self.column(n)).collect();
        let mut rows: Vec<Vec<Json>> = self
            .rows
            .iter()
            .map(|r| indexes.iter().map(|i| r[*i].clone()).collect())
            .collect();
        rows.sort_by_key(|r| serde_json::to_string(r).unwrap_or_default());
        rows
    }
}

/// Reads `uri` with `reader`; `Err` when the table is not there (yet) or the reader fails.
pub fn try_read_delta(
    reader: &str,
    uri: &str,
    env: &[(&str, String)],
) -> Result<DeltaRows, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/delta_read.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(reader)
        .arg(uri)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{reader} could not read {uri}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("reader output: {e}"))
}

pub fn read_delta(reader: &str, uri: &str) -> DeltaRows {
    // the python reader process itself crashes now and then under load ("terminate called
    // without an active exception", from its native threads): read again, a crash is not an answer
    let mut attempt = 0;
    loop {
        match try_read_delta(reader, uri, &[]) {
            Ok(rows) => return rows,
            Err(e) if attempt < 3 && e.contains("terminate called") => attempt += 1,
            Err(e) => panic!("{e}"),
        }
    }
}

/// Polls until `matches` holds for the table as `reader` reads it, returning the last read.
pub fn wait_for_delta(
    reader: &str,
    uri: &str,
    env: &[(&str, String)],
    timeout: Duration,
    what: &str,
    mut matches: impl FnMut(&DeltaRows) -> bool,
) -> DeltaRows {
    let start = Instant::now();
    let mut last = Err(String::from("not read yet"));
    let mut same_error = 0;
    loop {
        if let Ok(rows) = &last {
            if matches(rows) {
                return rows.clone();
            }
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}; last read: {:?}",
            last.as_ref().map(|r| r.rows.len())
        );
        std::thread::sleep(Duration::from_millis(300));
        let next = try_read_delta(reader, uri, env);
        // a reader that keeps failing the same way is broken, not waiting for a table
        same_error = match (&next, &last) {
            // (a table not made yet is what waiting is for)
            (Err(now), Err(before))
                if now == before
                    && !now.contains("TableNotFoundError")
                    && !now.contains("NoSuchTableError")
                    && !now.contains("no table") =>
            {
                same_error + 1
            }
            _ => 0,
        };
        assert!(
            same_error < 40,
            "{what}: {}",
            next.as_ref().err().map_or("", |e| e.as_str())
        );
        last = next;
    }
}

impl Workdir {
    pub fn iceberg_dir(&self) -> PathBuf {
        self.path().join("iceberg")
    }

    /// An Iceberg table of the sink (default namespace template) as the readers name it:
    /// `iceberg:<catalog file>#<namespace>#<table>`; `stream` is `<server>.<database>.<table>`.
    pub fn iceberg_table(&self, kind: &str, stream: &str) -> String {
        let (scope, table) = stream.rsplit_once('.').expect("server.database.table");
        let catalog = self.iceberg_dir().join("catalog.db");
        format!("iceberg:{}#{kind}.{scope}#{table}", catalog.display())
    }

    /// Replaces the `[sink]` section with an Iceberg sink under `iceberg/` (or `warehouse`),
    /// plus `extra`.
    pub fn use_iceberg_sink(&self, warehouse: Option<&str>, extra: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let start = text.find("[sink]").expect("a sink section");
        let end = text.find("[state]").expect("a state section");
        let warehouse = warehouse
            .map(str::to_string)
            .unwrap_or_else(|| self.iceberg_dir().display().to_string());
        let interval = if extra.contains("commit_interval") {
            ""
        } else {
            "commit_interval = \"200ms\"\n"
        };
        let sink = format!(
            "[sink]\nkind = \"iceberg\"\nwarehouse = \"{warehouse}\"\n{interval}{extra}\n\n"
        );
        std::fs::write(
            self.config(),
            format!("{}{sink}{}", &text[..start], &text[end..]),
        )
        .expect("config");
    }

    pub fn delta_dir(&self) -> PathBuf {
        self.path().join("delta")
    }

    /// Where a table of the Delta sink lives: `kind` is `mirror` or `changelog`.
    pub fn delta_table(&self, kind: &str, stream: &str) -> String {
        self.delta_dir()
            .join(kind)
            .join(stream)
            .display()
            .to_string()
    }

    /// Replaces the `[sink]` section with a Delta sink under `delta/` (or `path`), plus `extra`.
    pub fn use_delta_sink(&self, path: Option<&str>, extra: &str) {
        let text = std::fs::read_to_string(self.config()).expect("config");
        let start = text.find("[sink]").expect("a sink section");
        let end = text.find("[state]").expect("a state section");
        let path = path
            .map(str::to_string)
            .unwrap_or_else(|| self.delta_dir().display().to_string());
        let interval = if extra.contains("commit_interval") {
            ""
        } else {
            "commit_interval = \"200ms\"\n"
        };
        let sink = format!("[sink]\nkind = \"delta\"\npath = \"{path}\"\n{interval}{extra}\n\n");
        std::fs::write(
            self.config(),
            format!("{}{sink}{}", &text[..start], &text[end..]),
        )
        .expect("config");
    }
}

/// The AWS variables naming an S3 endpoint and the test keys, as delta-rs and the readers take
/// them.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_REGION", "us-east-1".into()),
        (
            "AWS_ACCESS_KEY_ID",
            super::endpoint("HEADWATER_S3_ACCESS_KEY"),
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            super::endpoint("HEADWATER_S3_SECRET_KEY"),
        ),
    ]
}

/// A private S3-compatible server (s3s-fs) a test may stop and start, serving its own
/// directory with one bucket `headwater`.
pub struct PrivateS3 {
    pub port: u16,
    root: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateS3 {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(root.path().join("headwater")).expect("bucket dir");
        let mut server = PrivateS3 {
            port,
            root,
            child: None,
        };
        server.launch();
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn launch(&mut self) {
        let child = Command::new(super::endpoint("HEADWATER_S3S_FS"))
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", &super::endpoint("HEADWATER_S3_ACCESS_KEY")])
            .args(["--secret-key", &super::endpoint("HEADWATER_S3_SECRET_KEY")])
            .arg(self.root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let address = format!("127.0.0.1:{}", self.port);
        super::wait_until(Duration::from_secs(30), "s3s-fs to listen", || {
            std::net::TcpStream::connect(&address).is_ok()
        });
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        self.stop();
    }
}
