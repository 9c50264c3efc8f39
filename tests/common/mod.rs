//! Helpers for tests against the real servers started by `scripts/services.sh`.
#![allow(dead_code)]

pub mod counter_load;
pub mod delta;
pub mod delta_load;
mod hold;
mod kafka;
mod lake;
pub mod lakehouse_cases;
mod mariadb;
pub mod pg_pair;
mod postgres;
pub mod proxy;
mod tls;
#[allow(unused_imports)]
pub use hold::*;
#[allow(unused_imports)]
pub use {kafka::*, lake::*, mariadb::*, postgres::*, tls::*};

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
        self.spawn_logging("warn")
    }

    /// Starts `headwater run` in the background, logging what `filter` lets through
    /// (`HEADWATER_LOG` syntax) to its piped stderr.
    pub fn spawn_logging(&self, filter: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_headwater"))
            .args(["run", "--config"])
            .arg(self.config())
            .env("HEADWATER_LOG", filter)
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

/// A loopback port free right now, for a server of a test's own.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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

/// The peak RSS a million-row transaction may take. Held in memory, its million events would
/// take several hundred MB. The pipeline holds at most 64 batches of 1,024 events (~25 MB)
/// plus the sink's open file; with mimalloc built without transparent huge pages the peak
/// measured 59–97 MiB across both sources, idle and under three busy loops.
#[allow(dead_code)]
pub const LARGE_TRANSACTION_PEAK_RSS_KIB: u64 = 120 * 1024;

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
