//! Every configuration error, as a user meets it: `headwater check` on a file with one bad
//! line stops before connecting anywhere, names the file and the line to change (or, for a
//! syntax or type error, TOML's own line), the key, and what to write instead — each said once.

use std::process::Command;

const MYSQL_LAKE: &str = r#"[source]
kind = "mysql"
url = "mysql://headwater:secret@127.0.0.1:1"
name = "shop"
server_id = 5401
include = ["shop.*"]
exclude = []
heartbeat_interval = "10s"
snapshot_chunk_size = 1000
signal_table = "headwater.signal"

[sink]
kind = "lake"
path = "./lake"
commit_interval = "2s"
max_file_bytes = 1048576

[state]
path = "./state"

[pipeline]
max_in_flight = 100000
"#;

const POSTGRES_DELTA: &str = r#"[source]
kind = "postgres"
url = "postgres://headwater:secret@127.0.0.1:1/shop"
name = "shop"
slot = "headwater_shop"
publication = "headwater_shop"
include = ["public.*"]
status_interval = "1s"
snapshot_chunk_size = 1000
failover = false

[sink]
kind = "delta"
path = "./lake"
commit_interval = "2s"
target_file_size = 1048576
compact_min_files = 10

[state]
path = "./state"
"#;

const MYSQL_ICEBERG: &str = r#"[source]
kind = "mysql"
url = "mysql://headwater:secret@127.0.0.1:1"
name = "shop"
server_id = 5402

[sink]
kind = "iceberg"
warehouse = "./lake"
namespace = "{kind}.{database}"
catalog_name = "headwater"

[state]
path = "./state"
"#;

const MYSQL_KAFKA: &str = r#"[source]
kind = "mysql"
url = "mysql://headwater:secret@127.0.0.1:1"
name = "shop"
server_id = 5401

[sink]
kind = "kafka"
brokers = "127.0.0.1:1"
topic_prefix = "shop"
topic_template = "{prefix}.{database}.{table}"
schema_registry = "http://127.0.0.1:1"
format = "avro"
partitions = 3

[sink.producer]
"compression.type" = "zstd"

[state]
path = "./state"
"#;

/// One bad config: `line` of `base` replaced by `with`; the error must carry every one of
/// `says`, and point at the changed line when `at_line`.
struct Case {
    base: &'static str,
    line: &'static str,
    with: &'static str,
    says: &'static [&'static str],
    at_line: bool,
}

const fn case(
    base: &'static str,
    line: &'static str,
    with: &'static str,
    says: &'static [&'static str],
) -> Case {
    Case {
        base,
        line,
        with,
        says,
        at_line: true,
    }
}

/// Errors TOML itself reports (syntax, types, unknown keys and kinds, missing keys) carry its
/// own "line N" instead of the file:line prefix.
const fn toml_case(
    base: &'static str,
    line: &'static str,
    with: &'static str,
    says: &'static [&'static str],
) -> Case {
    Case {
        base,
        line,
        with,
        says,
        at_line: false,
    }
}

const CASES: &[Case] = &[
    // the file as a whole
    toml_case(
        MYSQL_LAKE,
        "server_id = 5401",
        "server_id = = 5401",
        &["line 5"],
    ),
    case(
        MYSQL_LAKE,
        "server_id = 5401",
        "server_id = \"five\"",
        &["source.server_id", "expected u32"],
    ),
    case(
        MYSQL_LAKE,
        "server_id = 5401",
        "server_id = 5401\nserverid = 1",
        &["source.serverid", "unknown field", "server_id"],
    ),
    case(
        MYSQL_LAKE,
        "kind = \"mysql\"",
        "kind = \"oracle\"",
        &["source.kind", "oracle", "\"mysql\" or \"postgres\""],
    ),
    case(
        MYSQL_LAKE,
        "kind = \"lake\"",
        "kind = \"s3\"",
        &[
            "sink.kind",
            "\"lake\" or \"delta\" or \"iceberg\" or \"kafka\"",
        ],
    ),
    toml_case(
        MYSQL_LAKE,
        "name = \"shop\"",
        "",
        &["[source]", "missing field `name`"],
    ),
    toml_case(
        MYSQL_LAKE,
        "[pipeline]",
        "[pipelines]",
        &["line 21", "pipelines"],
    ),
    case(
        MYSQL_LAKE,
        "commit_interval = \"2s\"",
        "commit_interval = \"soon\"",
        &["sink.commit_interval", "soon", "\"10s\""],
    ),
    toml_case(
        MYSQL_LAKE,
        "url = \"mysql://headwater:secret@127.0.0.1:1\"",
        "url = \"mysql://headwater:${HEADWATER_NOT_SET_ANYWHERE}@127.0.0.1:1\"",
        &["HEADWATER_NOT_SET_ANYWHERE", "export it"],
    ),
    case(
        POSTGRES_DELTA,
        "failover = false",
        "failover = \"yes\"",
        &["source.failover", "expected a boolean"],
    ),
    // MySQL source
    case(
        MYSQL_LAKE,
        "url = \"mysql://headwater:secret@127.0.0.1:1\"",
        "url = \"postgres://headwater:secret@127.0.0.1:1\"",
        &["source.url", "mysql://"],
    ),
    case(
        MYSQL_LAKE,
        "server_id = 5401",
        "server_id = 0",
        &["source.server_id", "e.g. 5401"],
    ),
    case(
        MYSQL_LAKE,
        "heartbeat_interval = \"10s\"",
        "heartbeat_interval = \"10ms\"",
        &["source.heartbeat_interval", "100ms"],
    ),
    case(
        MYSQL_LAKE,
        "snapshot_chunk_size = 1000",
        "snapshot_chunk_size = 0",
        &["source.snapshot_chunk_size", "between 1 and 1000000"],
    ),
    case(
        MYSQL_LAKE,
        "heartbeat_interval = \"10s\"",
        "heartbeat_interval = \"10s\"\nstart = \"earliest\"",
        &["source.start", "snapshot = \"never\""],
    ),
    case(
        MYSQL_LAKE,
        "signal_table = \"headwater.signal\"",
        "signal_table = \"signal\"",
        &["source.signal_table", "database.table"],
    ),
    case(
        MYSQL_LAKE,
        "signal_table = \"headwater.signal\"",
        "tls_ca_file = \"/nonexistent/ca.pem\"",
        &["source.tls_ca_file", "PEM file"],
    ),
    case(
        MYSQL_LAKE,
        "include = [\"shop.*\"]",
        "include = [\"shop\"]",
        &["source.include", "shop.*"],
    ),
    case(
        MYSQL_LAKE,
        "include = [\"shop.*\"]",
        "include = [\"shop.[\"]",
        &["source.include", "not a valid glob"],
    ),
    case(
        MYSQL_LAKE,
        "exclude = []",
        "exclude = [\"audit\"]",
        &["source.exclude", "database.table"],
    ),
    case(
        MYSQL_LAKE,
        "name = \"shop\"",
        "name = \"my shop\"",
        &["source.name", "letters, digits"],
    ),
    // PostgreSQL source
    case(
        POSTGRES_DELTA,
        "url = \"postgres://headwater:secret@127.0.0.1:1/shop\"",
        "url = \"mysql://headwater:secret@127.0.0.1:1/shop\"",
        &["source.url", "postgres://"],
    ),
    case(
        POSTGRES_DELTA,
        "snapshot_chunk_size = 1000",
        "snapshot_chunk_size = 2000000",
        &["source.snapshot_chunk_size", "between 1 and 1000000"],
    ),
    case(
        POSTGRES_DELTA,
        "slot = \"headwater_shop\"",
        "slot = \"Headwater-Shop\"",
        &["source.slot", "lower-case letters"],
    ),
    case(
        POSTGRES_DELTA,
        "publication = \"headwater_shop\"",
        "publication = \"\"",
        &["source.publication", "lower-case letters"],
    ),
    case(
        POSTGRES_DELTA,
        "status_interval = \"1s\"",
        "status_interval = \"10ms\"",
        &["source.status_interval", "100ms"],
    ),
    // lake sink
    case(
        MYSQL_LAKE,
        "path = \"./lake\"",
        "path = \"\"",
        &["sink.path", "e.g. path"],
    ),
    case(
        MYSQL_LAKE,
        "commit_interval = \"2s\"",
        "commit_interval = \"1ms\"",
        &["sink.commit_interval", "at least \"10ms\""],
    ),
    case(
        MYSQL_LAKE,
        "max_file_bytes = 1048576",
        "max_file_bytes = 100",
        &["sink.max_file_bytes", "at least 4096"],
    ),
    // Iceberg sink
    case(
        MYSQL_ICEBERG,
        "namespace = \"{kind}.{database}\"",
        "namespace = \"{database}\"",
        &["sink.namespace", "{kind}"],
    ),
    case(
        MYSQL_ICEBERG,
        "warehouse = \"./lake\"",
        "warehouse = \"s3://bucket/lake\"",
        &["sink.catalog_path", "sqlite"],
    ),
    case(
        MYSQL_ICEBERG,
        "catalog_name = \"headwater\"",
        "catalog = \"postgres\"",
        &["sink.catalog_url", "postgres://"],
    ),
    toml_case(
        MYSQL_ICEBERG,
        "catalog_name = \"headwater\"",
        "catalog = \"rest\"",
        &["sink.catalog", "sqlite", "postgres"],
    ),
    // Delta sink
    case(
        POSTGRES_DELTA,
        "path = \"./lake\"",
        "path = \" \"",
        &["sink.path", "s3://bucket/prefix"],
    ),
    case(
        POSTGRES_DELTA,
        "path = \"./lake\"",
        "path = \"gs://bucket/lake\"",
        &["sink.path", "s3://"],
    ),
    case(
        POSTGRES_DELTA,
        "commit_interval = \"2s\"",
        "commit_interval = \"1ms\"",
        &["sink.commit_interval", "at least \"10ms\""],
    ),
    case(
        POSTGRES_DELTA,
        "target_file_size = 1048576",
        "target_file_size = 1000",
        &["sink.target_file_size", "at least 65536"],
    ),
    case(
        POSTGRES_DELTA,
        "compact_min_files = 10",
        "compact_min_files = 1",
        &["sink.compact_min_files", "at least 2"],
    ),
    // Kafka sink
    case(
        MYSQL_KAFKA,
        "brokers = \"127.0.0.1:1\"",
        "brokers = \" \"",
        &["sink.brokers", "host:port"],
    ),
    case(
        MYSQL_KAFKA,
        "topic_prefix = \"shop\"",
        "topic_prefix = \"\"",
        &["sink.topic_prefix", "topic_prefix = \"shop\""],
    ),
    case(
        MYSQL_KAFKA,
        "topic_template = \"{prefix}.{database}.{table}\"",
        "topic_template = \"{prefix}.all\"",
        &["sink.topic_template", "{table}"],
    ),
    case(
        MYSQL_KAFKA,
        "schema_registry = \"http://127.0.0.1:1\"",
        "",
        &["sink.schema_registry", "format = \"json\""],
    ),
    case(
        MYSQL_KAFKA,
        "partitions = 3",
        "partitions = 0",
        &["sink.partitions", "at least 1"],
    ),
    // (a key of [sink.producer] is named by the file alone)
    toml_case(
        MYSQL_KAFKA,
        "\"compression.type\" = \"zstd\"",
        "\"enable.idempotence\" = \"false\"",
        &["sink.producer", "enable.idempotence", "remove it"],
    ),
    // state and pipeline
    case(
        MYSQL_LAKE,
        "path = \"./state\"",
        "path = \"\"",
        &["state.path", "headwater-state"],
    ),
    case(
        MYSQL_LAKE,
        "max_in_flight = 100000",
        "max_in_flight = 10",
        &["pipeline.max_in_flight", "at least 1000"],
    ),
];

#[test]
fn every_config_error_names_the_line_the_key_and_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("headwater.toml");
    for (n, case) in CASES.iter().enumerate() {
        assert_eq!(
            case.base.matches(case.line).count(),
            1,
            "case {n}: `{}` must be one line of its base config",
            case.line
        );
        let text = case.base.replacen(case.line, case.with, 1);
        std::fs::write(&file, &text).expect("write the config");
        let output = Command::new(env!("CARGO_BIN_EXE_headwater"))
            .args(["check", "--config"])
            .arg(&file)
            .current_dir(dir.path())
            .output()
            .expect("run headwater");
        let said = String::from_utf8_lossy(&output.stderr).into_owned();
        let context = format!("case {n} (`{}` → `{}`) said:\n{said}", case.line, case.with);
        assert!(!output.status.success(), "{context}");
        for phrase in case.says {
            assert!(said.contains(phrase), "missing {phrase:?}: {context}");
        }
        if case.at_line && !case.with.is_empty() {
            // the bad key is on the replacement's last line
            let bad = case.with.lines().last().unwrap_or_default();
            let line = text
                .lines()
                .position(|l| l == bad)
                .expect("the changed line")
                + 1;
            let at = format!("{}:{line}:", file.display());
            assert!(said.contains(&at), "not pointed at {at}: {context}");
        } else {
            assert!(
                said.contains(&file.display().to_string()),
                "the file is named: {context}"
            );
        }
        // the cause once: the first line of the message is not repeated
        let first = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        assert_eq!(said.matches(first).count(), 1, "said twice: {context}");
        // nothing was created: a config error stops before the state or sink is touched
        assert!(
            !dir.path().join("state").exists() && !dir.path().join("lake").exists(),
            "{context}"
        );
    }
    eprintln!(
        "{} config errors, each named at its line with its fix",
        CASES.len()
    );
}
