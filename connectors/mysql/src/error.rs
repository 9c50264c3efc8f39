//! Classification of MySQL/MariaDB errors: decided once, here.

use headwater_contract::{redact_url, ConnectorError};
use mysql_async::Error as MyError;

/// MariaDB/MySQL: the requested binlog position or GTID is no longer on the server.
pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
/// MariaDB: another replica connected with the same server_id.
pub const ER_SLAVE_SAME_ID: u16 = 4052;
const ER_ACCESS_DENIED: u16 = 1045;
const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;
const ER_DBACCESS_DENIED: u16 = 1044;
const ER_TABLEACCESS_DENIED: u16 = 1142;

/// Classifies an error from the connection or the binlog stream. `what` says what was being done.
pub fn classify(err: MyError, what: &str, url: &str, server_id: u32) -> ConnectorError {
    match &err {
        MyError::Server(server) => {
            let message = match server.code {
                ER_MASTER_FATAL_ERROR_READING_BINLOG if server.message.contains("same server") => format!(
                    "{what}: the server says another replica uses server_id {server_id} ({}); give this pipeline a unique source.server_id",
                    server.message
                ),
                ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                    return ConnectorError::position_lost(format!(
                        "{what}: the server no longer has the binlog position Headwater needs ({}). Changes after the last checkpoint were purged before Headwater read them, so continuing would silently lose them. To recover, set source.snapshot = \"when_needed\" and restart (the tables are copied again), or — accepting the gap — move state.path and the sink's data away and start again. Raise binlog_expire_logs_seconds on the server so it does not recur.",
                        server.message
                    ))
                    .caused_by(err)
                }
                ER_SLAVE_SAME_ID => format!(
                    "{what}: another replica connected with server_id {server_id} and the server dropped this one ({}); give each pipeline and replica a unique source.server_id",
                    server.message
                ),
                ER_ACCESS_DENIED => format!(
                    "{what}: access denied for the user in {} ({}); check the user and password in source.url",
                    redact_url(url),
                    server.message
                ),
                ER_SPECIFIC_ACCESS_DENIED | ER_DBACCESS_DENIED | ER_TABLEACCESS_DENIED => format!(
                    "{what}: missing privilege ({}); run GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT ON *.* TO the Headwater user",
                    server.message
                ),
                // shutdown in progress, connection killed, too many connections, lock waits
                1053 | 1927 | 1040 | 1205 | 1213 | 2013 | 2006 => {
                    return ConnectorError::retryable(format!("{what}: {} (error {})", server.message, server.code))
                        .caused_by(err)
                }
                code => format!("{what}: server error {code}: {}", server.message),
            };
            ConnectorError::definite(message).caused_by(err)
        }
        MyError::Url(_) => ConnectorError::definite(format!(
            "source.url {} is not a valid MySQL URL ({err}); the form is mysql://user:password@host:port",
            redact_url(url)
        )),
        MyError::Io(_) | MyError::Driver(_) => {
            ConnectorError::retryable(format!("{what}: connection to {} failed: {err}", redact_url(url))).caused_by(err)
        }
        MyError::Other(_) => ConnectorError::retryable(format!("{what}: {err}")).caused_by(err),
    }
}
