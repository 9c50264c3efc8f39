//! The Prometheus endpoint against real readers: `promtool check metrics` lints the exposition,
//! and a real Prometheus server (Debian's `prometheus`) scrapes a running pipeline; its query
//! API must see the per-table counters equal the changes written.

mod common;

use common::*;
use mysql_async::prelude::Queryable;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A loopback port nobody listens on now (the OS hands out ephemeral ports in turn, so it is
/// not handed out again at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Adds a `[metrics]` section on a free loopback port to the workdir's config; the port.
fn serve_metrics(work: &Workdir) -> u16 {
    let port = free_port();
    let mut config = std::fs::read_to_string(work.config()).unwrap();
    config.push_str(&format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(work.config(), config).unwrap();
    port
}

/// `GET path` on 127.0.0.1:port (HTTP/1.0, so no chunked body): (status code, body), or None
/// while nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())?;
    Some((code, body))
}

/// The value of the sample `name{labels}` in an exposition (labels in the order rendered).
fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name_and_labels)?;
        rest.trim().parse().ok()
    })
}

fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (apt-get install prometheus; scripts/test.sh does)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused the exposition:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Prometheus server of the test's own, scraping `target` every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: headwater\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (apt-get install prometheus; scripts/test.sh does)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// The value of an instant query that yields one sample, if it does yet.
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (code, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))?;
        if code != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let value = json["data"]["result"].get(0)?["value"].get(1)?.as_str()?;
        value.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_per_table_counts_equal_to_the_changes_written() {
    let db = unique("hw_metrics");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT, note VARCHAR(10))"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("metrics", &db, "snapshot = \"never\"", "");
    let port = serve_metrics(&work);
    work.catch_up(); // records the starting point
    let headwater = work.spawn();
    wait_until(Duration::from_secs(60), "/health to answer", || {
        http_get(port, "/health").is_some_and(|(code, _)| code == 200)
    });
    admin
        .query_drop(format!(
            "INSERT INTO `{db}`.t (id, v) SELECT seq, 0 FROM `{db}`.seq_1_to_300;
             UPDATE `{db}`.t SET v = 1 WHERE id <= 40;
             DELETE FROM `{db}`.t WHERE id > 290"
        ))
        .await
        .unwrap();
    let table = format!("{db}.t");
    let created = format!("headwater_changes_total{{table=\"{table}\",op=\"c\"}}");
    let mut exposition = String::new();
    wait_until(Duration::from_secs(60), "the changes counted", || {
        exposition = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        sample(&exposition, &created) == Some(300.0)
    });
    let updated = format!("headwater_changes_total{{table=\"{table}\",op=\"u\"}}");
    let deleted = format!("headwater_changes_total{{table=\"{table}\",op=\"d\"}}");
    assert_eq!(sample(&exposition, &updated), Some(40.0), "{exposition}");
    assert_eq!(sample(&exposition, &deleted), Some(10.0), "{exposition}");
    // distribution: 340 row images (300 inserts, 40 updates), `note` NULL in every one
    wait_until(Duration::from_secs(30), "the column counts", || {
        exposition = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        sample(
            &exposition,
            &format!("headwater_column_nulls_total{{table=\"{table}\",column=\"note\"}}"),
        ) == Some(340.0)
    });
    for (name, column, expected) in [
        ("headwater_column_values_total", "id", 340.0),
        ("headwater_column_nulls_total", "id", 0.0),
        ("headwater_column_values_total", "v", 340.0),
        ("headwater_column_values_total", "note", 0.0),
    ] {
        assert_eq!(
            sample(
                &exposition,
                &format!("{name}{{table=\"{table}\",column=\"{column}\"}}")
            ),
            Some(expected),
            "{name} {column}: {exposition}"
        );
    }
    // a column updated to NULL everywhere shows in its NULL count: 290 more images, all NULL
    admin
        .query_drop(format!("UPDATE `{db}`.t SET v = NULL"))
        .await
        .unwrap();
    let v_nulls = format!("headwater_column_nulls_total{{table=\"{table}\",column=\"v\"}}");
    wait_until(Duration::from_secs(30), "the NULLs of v counted", || {
        exposition = http_get(port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        sample(&exposition, &v_nulls) == Some(290.0)
    });
    assert_eq!(
        http_get(port, "/ready").map(|(code, _)| code),
        Some(200),
        "ready: the source streams and the sink is open"
    );
    assert_eq!(http_get(port, "/nothing").map(|(code, _)| code), Some(404));
    for name in [
        "headwater_commit_to_durable_seconds_bucket",
        "headwater_durable_lag_seconds",
        "headwater_read_lag_seconds",
        "headwater_schema_version",
        "headwater_sink_bytes_total",
        "headwater_source_connected 1",
        "headwater_position_loss_eta_seconds",
        "headwater_transactions_total",
        "headwater_needed_binlog_age_seconds",
        "headwater_log_retention_seconds 604800",
        "headwater_backpressure_wait_seconds",
        "headwater_lag_bytes",
        "# HELP headwater_changes_total",
    ] {
        assert!(exposition.contains(name), "{name} missing:\n{exposition}");
    }
    wait_until(Duration::from_secs(30), "the durable position", || {
        http_get(port, "/metrics")
            .is_some_and(|(_, b)| b.contains("headwater_durable_position_info{position="))
    });
    promtool_check(&http_get(port, "/metrics").unwrap().1);

    let prometheus = Prometheus::start(port);
    let promql = format!("sum by (op) (headwater_changes_total{{table=\"{table}\",op=\"c\"}})");
    wait_until(
        Duration::from_secs(90),
        "Prometheus to scrape the count",
        || prometheus.query(&promql) == Some(300.0),
    );
    stop_gracefully(headwater);
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_seen_by_prometheus_rises_while_the_broker_is_stopped_and_falls_after() {
    let db = unique("hw_fresh");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT)"
        ))
        .await
        .unwrap();
    let broker = PrivateBroker::start();
    let work = Workdir::new();
    work.mysql_config("fresh", &db, "snapshot = \"never\"", "");
    work.use_kafka_sink(&broker.brokers(), &unique("hwf"), "json");
    let port = serve_metrics(&work);
    work.catch_up();
    let headwater = work.spawn();
    let prometheus = Prometheus::start(port);
    admin
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (1, 0)"))
        .await
        .unwrap();
    let created = format!("headwater_changes_total{{table=\"{db}.t\",op=\"c\"}}");
    wait_until(
        Duration::from_secs(90),
        "the first change delivered and scraped",
        || {
            prometheus.query(&created) == Some(1.0)
                && prometheus.query("headwater_durable_lag_seconds") == Some(0.0)
        },
    );
    broker.pause();
    admin
        .query_drop(format!("INSERT INTO `{db}`.t VALUES (2, 0)"))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(90),
        "freshness to fall behind while the broker is stopped",
        || {
            prometheus
                .query("headwater_durable_lag_seconds")
                .is_some_and(|lag| lag >= 3.0)
        },
    );
    broker.resume();
    wait_until(
        Duration::from_secs(90),
        "freshness to recover once the broker is back",
        || {
            prometheus.query("headwater_durable_lag_seconds") == Some(0.0)
                && prometheus.query(&created) == Some(2.0)
        },
    );
    stop_gracefully(headwater);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_lag_and_slot_in_the_exposition() {
    let schema = unique("hw_pgmetrics");
    postgres_admin()
        .await
        .batch_execute(&format!("CREATE SCHEMA {schema} AUTHORIZATION headwater"))
        .await
        .unwrap();
    let client = postgres_connect(&endpoint("HEADWATER_POSTGRES_URL")).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {schema}.t (id int PRIMARY KEY, v int, note text)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.postgres_config("pgmetrics", &schema, "snapshot = \"never\"");
    let mut config = std::fs::read_to_string(work.config()).unwrap();
    config = config.replace(
        "[state]",
        "[pipeline]\nretention_check_interval = \"1s\"\n\n[state]",
    );
    std::fs::write(work.config(), config).unwrap();
    let port = serve_metrics(&work);
    work.catch_up();
    let headwater = work.spawn();
    client
        .batch_execute(&format!(
            "INSERT INTO {schema}.t SELECT g, 0 FROM generate_series(1, 200) g;
             UPDATE {schema}.t SET v = NULL WHERE id <= 50;
             DELETE FROM {schema}.t WHERE id > 180"
        ))
        .await
        .unwrap();
    let table = format!("{schema}.t");
    let mut exposition = String::new();
    wait_until(
        Duration::from_secs(60),
        "the changes counted and the slot seen",
        || {
            exposition = http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            sample(
                &exposition,
                &format!("headwater_changes_total{{table=\"{table}\",op=\"d\"}}"),
            ) == Some(20.0)
                && sample(&exposition, "headwater_slot_active") == Some(1.0)
        },
    );
    for (name, expected) in [
        (
            format!("headwater_changes_total{{table=\"{table}\",op=\"c\"}}"),
            200.0,
        ),
        (
            format!("headwater_changes_total{{table=\"{table}\",op=\"u\"}}"),
            50.0,
        ),
        (
            format!("headwater_column_nulls_total{{table=\"{table}\",column=\"v\"}}"),
            50.0,
        ),
        (
            format!("headwater_column_nulls_total{{table=\"{table}\",column=\"note\"}}"),
            250.0,
        ),
    ] {
        assert_eq!(
            sample(&exposition, &name),
            Some(expected),
            "{name}: {exposition}"
        );
    }
    assert!(exposition.contains("headwater_lag_bytes "), "{exposition}");
    assert!(
        exposition.contains("headwater_slot_wal_headroom_bytes "),
        "{exposition}"
    );
    promtool_check(&exposition);
    stop_gracefully(headwater);
    postgres_cleanup(&schema, &work).await;
}

/// Every alert rule in docs/monitoring/ has a unit test that makes it fire (a rule that cannot
/// fire is a defect), run by `promtool test rules`.
#[test]
fn the_alert_rules_fire_as_their_unit_tests_expect() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/monitoring");
    let out = Command::new("promtool")
        .args(["test", "rules", "headwater-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool runs (apt-get install prometheus; scripts/test.sh does)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = std::fs::read_to_string(dir.join("headwater-alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("headwater-alerts.test.yml")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - "
            )),
            "alert {alert} has no unit test in which it fires"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let db = unique("hw_jsonlog");
    let mut admin = mysql_admin().await;
    admin
        .query_drop(format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.t (id INT PRIMARY KEY)"
        ))
        .await
        .unwrap();
    let work = Workdir::new();
    work.mysql_config("jsonlog", &db, "snapshot = \"never\"", "");
    work.catch_up();
    let run = |format: &str| {
        Command::new(env!("CARGO_BIN_EXE_headwater"))
            .args(["run", "--catch-up", "--config"])
            .arg(work.config())
            .env("HEADWATER_LOG", "info")
            .env("HEADWATER_LOG_FORMAT", format)
            .output()
            .expect("run headwater")
    };
    let out = run("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!lines.is_empty());
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{stderr}"
    );
    assert!(lines.iter().any(|l| l["message"] == "resuming"), "{stderr}");
    let bad = run("yaml");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("use \"text\" (the default) or \"json\""));
    admin
        .query_drop(format!("DROP DATABASE `{db}`"))
        .await
        .unwrap();
}

/// The dashboard and the alert rules name only metrics Headwater describes (a typo would show
/// an empty panel or a rule that never fires).
#[test]
fn the_dashboard_and_rules_name_only_metrics_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let described: String = [
        "src/telemetry.rs",
        "src/retention.rs",
        "src/pipeline_metrics.rs",
        "src/column_stats.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(root.join(f)).unwrap())
    .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("docs/monitoring/headwater-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut text = dashboard.to_string();
    text.push_str(
        &std::fs::read_to_string(root.join("docs/monitoring/headwater-alerts.yml")).unwrap(),
    );
    let mut names = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("headwater_") {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let name = name.trim_end_matches("_bucket").to_string();
        if name != "headwater_" && !name.ends_with('_') {
            names.insert(name);
        }
    }
    assert!(names.len() > 15, "{names:?}");
    for name in names {
        assert!(
            described.contains(&format!("\"{name}\"")),
            "{name} is used by docs/monitoring but not described in src/"
        );
    }
}
