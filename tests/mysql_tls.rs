//! TLS to MySQL/MariaDB: a server that requires it, with a certificate from a test CA.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_certificates(dir: &Path) -> Vec<String> {
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
    vec![
        format!("--ssl-ca={}", dir.join("ca.pem").display()),
        format!("--ssl-cert={}", dir.join("server.pem").display()),
        format!("--ssl-key={}", dir.join("server-key.pem").display()),
    ]
}

#[test]
fn a_server_that_requires_tls_is_read_over_tls() {
    let server = PrivateMariadb::start_with(1, make_certificates);
    server.sql(
        "CREATE USER 'tls'@'%' IDENTIFIED BY 'tls' REQUIRE SSL; GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO 'tls'@'%';
         CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY)",
    );
    let ca = server.dir.path().join("ca.pem");
    let work = Workdir::new();

    // Without TLS the server refuses the user, and Headwater says how to fix it.
    work.mysql_config_for(
        &format!("mysql://tls:tls@127.0.0.1:{}", server.port),
        "tls",
        "shop",
        "",
        "",
    );
    let output = work.headwater(&["run", "--catch-up"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("access denied"));

    // With the CA: TLS, with the certificate and the host name verified.
    work.mysql_config_for(
        &format!("mysql://tls:tls@127.0.0.1:{}", server.port),
        "tls",
        "shop",
        &format!("tls_ca_file = \"{}\"", ca.display()),
        "",
    );
    work.catch_up();
    server.sql("INSERT INTO shop.t VALUES (1), (2)");
    work.catch_up();
    assert_eq!(read_stream(&work.lake(), "tls.shop.t").len(), 2);
}
