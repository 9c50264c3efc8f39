//! TLS to PostgreSQL: a server that accepts only encrypted connections, for SQL and replication.

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_tls_is_read_over_tls() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let server = PrivatePostgres::start_with(
        "ssl = on",
        "hostssl all all 127.0.0.1/32 trust\nhostssl replication all 127.0.0.1/32 trust\n",
        |data| {
            for file in ["server.pem", "server-key.pem"] {
                std::fs::copy(certs.path().join(file), data.join(file)).unwrap();
            }
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.pem"))
                .arg(data.join("server-key.pem"))
                .status()
                .unwrap();
            Command::new("chmod")
                .args(["600"])
                .arg(data.join("server-key.pem"))
                .status()
                .unwrap();
            "ssl_cert_file = 'server.pem'\nssl_key_file = 'server-key.pem'".to_string()
        },
    );
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=require",
                server.port
            ))
            .args(["-tAc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql("CREATE TABLE t (id int PRIMARY KEY)");
    let work = Workdir::new();
    // Without TLS the server turns Headwater away, and the message says why.
    work.postgres_config_for(&server.admin_url(), "pgtls", "public", "");
    let output = work.headwater(&["run", "--catch-up"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no pg_hba.conf entry"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // With the CA: both connections encrypted, certificate and host name verified.
    work.postgres_config_for(
        &server.admin_url(),
        "pgtls",
        "public",
        &format!(
            "tls_ca_file = \"{}\"",
            certs.path().join("ca.pem").display()
        ),
    );
    work.catch_up();
    psql("INSERT INTO t VALUES (1), (2)");
    work.catch_up();
    assert_eq!(read_stream(&work.lake(), "pgtls.public.t").len(), 2);
}
