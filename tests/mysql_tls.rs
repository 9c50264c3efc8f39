//! TLS to MySQL/MariaDB: a server that requires it, with a certificate from a test CA.

mod common;

use common::*;
use std::path::Path;

/// Certificates from the test CA, and the server options that use them.
fn tls_options(dir: &Path) -> Vec<String> {
    make_certificates(dir);
    vec![
        format!("--ssl-ca={}", dir.join("ca.pem").display()),
        format!("--ssl-cert={}", dir.join("server.pem").display()),
        format!("--ssl-key={}", dir.join("server-key.pem").display()),
    ]
}

#[test]
fn a_server_that_requires_tls_is_read_over_tls() {
    let server = PrivateMariadb::start_with(1, tls_options);
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
