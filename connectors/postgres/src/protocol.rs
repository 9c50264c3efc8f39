//! The streaming-replication sub-protocol on a `replication=database` connection: startup and
//! authentication (cleartext, MD5, SCRAM-SHA-256), simple queries, and the CopyBoth stream of
//! XLogData (`w`) and keepalives (`k`), answered with standby status updates (`r`).
//! Framing and SCRAM come from `postgres-protocol`; the rest is this file.

use crate::tls::MaybeTls;
use bytes::{Buf, BufMut, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend, frontend};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An error from the server, with its SQLSTATE code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (SQLSTATE {code}){}", detail.as_deref().map(|d| format!("; {d}")).unwrap_or_default())]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("server error: {0}")]
    Server(ServerError),
    #[error("authentication: {0}")]
    Auth(String),
    #[error("{0} is a standby (in recovery) and no host in source.url is a primary yet")]
    Standby(String),
    #[error("unexpected message from the server: {0}")]
    Unexpected(String),
}

impl ProtocolError {
    /// With several hosts in source.url, says which one a connection error came from.
    fn at(self, host: &str, port: u16, hosts: usize) -> Self {
        match self {
            ProtocolError::Io(err) if hosts > 1 => ProtocolError::Io(std::io::Error::new(
                err.kind(),
                format!("{host}:{port}: {err}"),
            )),
            other => other,
        }
    }
}

/// Session settings for the walsender, so every value's text has one form.
pub(crate) const SESSION_OPTIONS: &str =
    "-c timezone=UTC -c datestyle=ISO -c intervalstyle=iso_8601 -c extra_float_digits=3 -c bytea_output=hex";

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct ConnectParams {
    /// Host and port of each server to try, in order; with more than one, the first that is
    /// not in recovery (the primary) is used.
    pub hosts: Vec<(String, u16)>,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// TLS configuration when the connection must be encrypted.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl ConnectParams {
    /// From source.url (and `tls_ca_file`), with an error naming the URL's form.
    pub fn from_url(
        url: &str,
        tls_ca_file: Option<&std::path::Path>,
    ) -> Result<ConnectParams, headwater_contract::ConnectorError> {
        let bad = |why: String| {
            headwater_contract::ConnectorError::definite(format!(
                "source.url {} {why}; the form is postgres://user:password@host:port/database",
                headwater_contract::redact_url(url)
            ))
        };
        let parsed: tokio_postgres::Config = url
            .parse()
            .map_err(|e| bad(format!("is not a valid PostgreSQL URL ({e})")))?;
        let ports = parsed.get_ports();
        let mut hosts = Vec::new();
        for (i, host) in parsed.get_hosts().iter().enumerate() {
            let tokio_postgres::config::Host::Tcp(host) = host else {
                return Err(bad("names a Unix socket; use a TCP host".into()));
            };
            // tokio_postgres gives each host its port (5432 where the URL has none)
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            hosts.push((host.clone(), port));
        }
        if hosts.is_empty() {
            return Err(bad("names no TCP host".into()));
        }
        Ok(ConnectParams {
            hosts,
            user: parsed
                .get_user()
                .ok_or_else(|| bad("names no user".into()))?
                .to_string(),
            password: parsed
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            database: parsed
                .get_dbname()
                .ok_or_else(|| bad("names no database".into()))?
                .to_string(),
            tls: if tls_ca_file.is_some()
                || parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require
            {
                Some(crate::tls::client_config(tls_ca_file)?)
            } else {
                None
            },
        })
    }
}

/// One message of the replication stream.
#[derive(Debug)]
pub enum StreamMessage {
    /// WAL data: a pgoutput message starting at `wal_start`.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        data: bytes::Bytes,
    },
    /// The server's WAL end; `reply_requested` asks for a status update now.
    Keepalive { wal_end: u64, reply_requested: bool },
}

/// One backend message taken off the bytes read from the server.
pub enum Incoming {
    Message(backend::Message),
    CopyBothResponse,
}

/// Takes the next whole backend message off the front of `buf`; `None` while `buf` holds only
/// part of one (read more and call again). Pure, so it can be fuzzed without a server.
pub fn take_incoming(buf: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
    // postgres-protocol does not parse CopyBothResponse ('W'): take it off by hand.
    if buf.len() >= 5 && buf[0] == b'W' {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len < 4 {
            return Err(ProtocolError::Unexpected(format!(
                "a CopyBothResponse of length {len}"
            )));
        }
        if buf.len() > len {
            buf.advance(len + 1);
            return Ok(Some(Incoming::CopyBothResponse));
        }
        return Ok(None);
    }
    Ok(backend::Message::parse(buf)?.map(Incoming::Message))
}

/// The replication message a CopyData body carries; `None` for an empty body.
pub fn stream_message(body: bytes::Bytes) -> Result<Option<StreamMessage>, ProtocolError> {
    let mut data = body;
    if data.is_empty() {
        return Ok(None);
    }
    match data.get_u8() {
        b'w' if data.len() >= 24 => {
            let wal_start = data.get_u64();
            let wal_end = data.get_u64();
            let _send_time = data.get_i64();
            Ok(Some(StreamMessage::XLogData {
                wal_start,
                wal_end,
                data,
            }))
        }
        b'k' if data.len() >= 17 => {
            let wal_end = data.get_u64();
            let _send_time = data.get_i64();
            let reply_requested = data.get_u8() == 1;
            Ok(Some(StreamMessage::Keepalive {
                wal_end,
                reply_requested,
            }))
        }
        other => Err(ProtocolError::Unexpected(format!(
            "CopyData of kind {other}"
        ))),
    }
}

pub struct ReplicationConnection {
    stream: MaybeTls,
    read_buf: BytesMut,
    write_buf: BytesMut,
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
fn pg_now() -> i64 {
    const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix_us - PG_EPOCH_OFFSET_US
}

fn server_error(body: &backend::ErrorResponseBody) -> ServerError {
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
    }
    ServerError {
        code,
        message,
        detail,
    }
}

impl ReplicationConnection {
    /// Connects, authenticates and waits until the server is ready. `options` become the
    /// session's settings (`-c name=value` pairs).
    pub async fn connect(params: &ConnectParams, options: &str) -> Result<Self, ProtocolError> {
        Self::open(params, options, true).await
    }

    /// A plain SQL session (no replication), used to stream snapshot chunks with COPY without
    /// the per-row task hand-off of a general-purpose client.
    pub async fn connect_sql(params: &ConnectParams, options: &str) -> Result<Self, ProtocolError> {
        Self::open(params, options, false).await
    }

    async fn open(
        params: &ConnectParams,
        options: &str,
        replication: bool,
    ) -> Result<Self, ProtocolError> {
        let mut last_error = None;
        for (host, port) in &params.hosts {
            match Self::open_host(params, host, *port, options, replication).await {
                Ok(conn) if params.hosts.len() == 1 => return Ok(conn),
                Ok(mut conn) => match conn.in_recovery().await {
                    Ok(false) => return Ok(conn),
                    Ok(true) => {
                        last_error = Some(ProtocolError::Standby(format!("{host}:{port}")));
                    }
                    Err(err) => last_error = Some(err),
                },
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error
            .unwrap_or_else(|| ProtocolError::Unexpected("source.url names no host".into())))
    }

    async fn open_host(
        params: &ConnectParams,
        host: &str,
        port: u16,
        options: &str,
        replication: bool,
    ) -> Result<Self, ProtocolError> {
        let timeout = headwater_contract::CONNECT_TIMEOUT;
        let handshake = Self::handshake(params, host, port, options, replication);
        match tokio::time::timeout(timeout, handshake).await {
            Ok(opened) => opened.map_err(|err| err.at(host, port, params.hosts.len())),
            Err(_) => Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from {host}:{port} in {timeout:?}"),
            ))),
        }
    }

    /// Whether the server is a standby (`pg_is_in_recovery()`).
    async fn in_recovery(&mut self) -> Result<bool, ProtocolError> {
        let rows = self.simple_query("SELECT pg_is_in_recovery()").await?;
        Ok(rows
            .first()
            .and_then(|row| row.first())
            .is_some_and(|value| value.as_deref() == Some("t")))
    }

    /// TCP, TLS, startup and authentication.
    async fn handshake(
        params: &ConnectParams,
        host: &str,
        port: u16,
        options: &str,
        replication: bool,
    ) -> Result<Self, ProtocolError> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let stream = match &params.tls {
            Some(config) => MaybeTls::upgrade(tcp, host, config.clone()).await?,
            None => MaybeTls::Plain(tcp),
        };
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(4096),
        };
        let mut startup = vec![
            ("user", params.user.as_str()),
            ("database", params.database.as_str()),
            ("application_name", "headwater"),
            ("options", options),
        ];
        if replication {
            startup.push(("replication", "database"));
        }
        frontend::startup_message(startup.iter().copied(), &mut conn.write_buf)?;
        conn.flush().await?;
        conn.authenticate(params).await?;
        loop {
            match conn.read_message().await? {
                backend::Message::ReadyForQuery(_) => return Ok(conn),
                backend::Message::ParameterStatus(_)
                | backend::Message::BackendKeyData(_)
                | backend::Message::NoticeResponse(_) => {}
                backend::Message::ErrorResponse(body) => {
                    return Err(ProtocolError::Server(server_error(&body)))
                }
                _ => return Err(ProtocolError::Unexpected("during startup".into())),
            }
        }
    }

    async fn authenticate(&mut self, params: &ConnectParams) -> Result<(), ProtocolError> {
        let password = || {
            params.password.clone().ok_or_else(|| {
                ProtocolError::Auth("the server asks for a password and the URL has none".into())
            })
        };
        match self.read_message().await? {
            backend::Message::AuthenticationOk => Ok(()),
            backend::Message::AuthenticationCleartextPassword => {
                frontend::password_message(password()?.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            backend::Message::AuthenticationMd5Password(body) => {
                let hashed = postgres_protocol::authentication::md5_hash(
                    params.user.as_bytes(),
                    password()?.as_bytes(),
                    body.salt(),
                );
                frontend::password_message(hashed.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            backend::Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut scram = false;
                while let Some(mechanism) = mechanisms
                    .next()
                    .map_err(|e| ProtocolError::Auth(e.to_string()))?
                {
                    scram |= mechanism == SCRAM_SHA_256;
                }
                if !scram {
                    return Err(ProtocolError::Auth(
                        "the server offers no SASL mechanism Headwater supports (SCRAM-SHA-256)"
                            .into(),
                    ));
                }
                let mut scram =
                    ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(
                    SCRAM_SHA_256,
                    scram.message(),
                    &mut self.write_buf,
                )?;
                self.flush().await?;
                match self.read_message().await? {
                    backend::Message::AuthenticationSaslContinue(body) => scram
                        .update(body.data())
                        .map_err(|e| ProtocolError::Auth(e.to_string()))?,
                    backend::Message::ErrorResponse(body) => {
                        return Err(ProtocolError::Server(server_error(&body)))
                    }
                    _ => return Err(ProtocolError::Unexpected("during SCRAM".into())),
                }
                frontend::sasl_response(scram.message(), &mut self.write_buf)?;
                self.flush().await?;
                match self.read_message().await? {
                    backend::Message::AuthenticationSaslFinal(body) => scram
                        .finish(body.data())
                        .map_err(|e| ProtocolError::Auth(e.to_string()))?,
                    backend::Message::ErrorResponse(body) => {
                        return Err(ProtocolError::Server(server_error(&body)))
                    }
                    _ => return Err(ProtocolError::Unexpected("during SCRAM".into())),
                }
                self.expect_auth_ok().await
            }
            backend::Message::ErrorResponse(body) => {
                Err(ProtocolError::Server(server_error(&body)))
            }
            _ => Err(ProtocolError::Auth(
                "the server asks for an authentication method Headwater does not support".into(),
            )),
        }
    }

    async fn expect_auth_ok(&mut self) -> Result<(), ProtocolError> {
        match self.read_message().await? {
            backend::Message::AuthenticationOk => Ok(()),
            backend::Message::ErrorResponse(body) => {
                Err(ProtocolError::Server(server_error(&body)))
            }
            _ => Err(ProtocolError::Unexpected("after the password".into())),
        }
    }

    async fn flush(&mut self) -> Result<(), ProtocolError> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        Ok(())
    }

    async fn read_message(&mut self) -> Result<backend::Message, ProtocolError> {
        match self.read_incoming().await? {
            Incoming::Message(message) => Ok(message),
            Incoming::CopyBothResponse => Err(ProtocolError::Unexpected(
                "CopyBothResponse outside START_REPLICATION".into(),
            )),
        }
    }

    async fn read_incoming(&mut self) -> Result<Incoming, ProtocolError> {
        loop {
            if let Some(incoming) = take_incoming(&mut self.read_buf)? {
                return Ok(incoming);
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes from the server into the read buffer.
    async fn fill(&mut self) -> Result<(), ProtocolError> {
        if self.read_buf.capacity() - self.read_buf.len() < 8192 {
            self.read_buf.reserve(64 * 1024);
        }
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        if n == 0 {
            return Err(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        Ok(())
    }

    /// Runs a replication command that returns rows; returns them as text columns.
    pub async fn simple_query(
        &mut self,
        query: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ProtocolError> {
        frontend::query(query, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                backend::Message::DataRow(row) => {
                    let buf = row.buffer();
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| ProtocolError::Unexpected(e.to_string()))?
                    {
                        values.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(values);
                }
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        match error {
            Some(error) => Err(ProtocolError::Server(error)),
            None => Ok(rows),
        }
    }

    /// Sends `COPY (…) TO STDOUT` and waits for the server to start sending rows.
    pub async fn copy_out_start(&mut self, query: &str) -> Result<(), ProtocolError> {
        frontend::query(query, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                backend::Message::CopyOutResponse(_) => return Ok(()),
                backend::Message::NoticeResponse(_) => {}
                backend::Message::ErrorResponse(body) => {
                    let error = server_error(&body);
                    self.until_ready().await?;
                    return Err(ProtocolError::Server(error));
                }
                _ => {
                    return Err(ProtocolError::Unexpected(
                        "instead of CopyOutResponse".into(),
                    ))
                }
            }
        }
    }

    /// Appends COPY rows to `block` until it holds at least `at_least` bytes; `false` when the
    /// COPY has ended (and the session is ready again).
    pub async fn copy_out_next(
        &mut self,
        block: &mut BytesMut,
        at_least: usize,
    ) -> Result<bool, ProtocolError> {
        loop {
            // CopyData ('d', one per row) is copied straight out of the read buffer; anything
            // else goes through the general parser.
            while self.read_buf.len() >= 5 && self.read_buf[0] == b'd' {
                let len = u32::from_be_bytes([
                    self.read_buf[1],
                    self.read_buf[2],
                    self.read_buf[3],
                    self.read_buf[4],
                ]) as usize;
                if len < 4 {
                    return Err(ProtocolError::Unexpected(
                        "a CopyData message shorter than its header".into(),
                    ));
                }
                if self.read_buf.len() < len + 1 {
                    break;
                }
                block.extend_from_slice(&self.read_buf[5..len + 1]);
                self.read_buf.advance(len + 1);
                if block.len() >= at_least {
                    return Ok(true);
                }
            }
            if self.read_buf.len() < 5 || self.read_buf[0] == b'd' {
                self.fill().await?;
                continue;
            }
            match self.read_message().await? {
                backend::Message::CopyData(body) => {
                    block.extend_from_slice(body.data());
                    if block.len() >= at_least {
                        return Ok(true);
                    }
                }
                backend::Message::CopyDone => {
                    self.until_ready().await?;
                    return Ok(false);
                }
                backend::Message::ErrorResponse(body) => {
                    let error = server_error(&body);
                    self.until_ready().await?;
                    return Err(ProtocolError::Server(error));
                }
                backend::Message::NoticeResponse(_) => {}
                _ => return Err(ProtocolError::Unexpected("inside COPY".into())),
            }
        }
    }

    /// Reads up to ReadyForQuery, keeping the first error.
    async fn until_ready(&mut self) -> Result<(), ProtocolError> {
        let mut error = None;
        loop {
            match self.read_message().await? {
                backend::Message::ReadyForQuery(_) => break,
                backend::Message::ErrorResponse(body) => {
                    error.get_or_insert_with(|| server_error(&body));
                }
                _ => {}
            }
        }
        match error {
            Some(error) => Err(ProtocolError::Server(error)),
            None => Ok(()),
        }
    }

    /// Sends START_REPLICATION and waits for the CopyBoth response.
    pub async fn start_replication(&mut self, command: &str) -> Result<(), ProtocolError> {
        frontend::query(command, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            match self.read_incoming().await? {
                Incoming::CopyBothResponse => return Ok(()),
                Incoming::Message(backend::Message::ErrorResponse(body)) => {
                    return Err(ProtocolError::Server(server_error(&body)))
                }
                Incoming::Message(backend::Message::NoticeResponse(_)) => {}
                Incoming::Message(_) => {
                    return Err(ProtocolError::Unexpected(
                        "instead of CopyBothResponse".into(),
                    ))
                }
            }
        }
    }

    /// The next XLogData or keepalive.
    pub async fn next(&mut self) -> Result<StreamMessage, ProtocolError> {
        loop {
            match self.read_message().await? {
                backend::Message::CopyData(body) => {
                    if let Some(message) = stream_message(body.into_bytes())? {
                        return Ok(message);
                    }
                }
                backend::Message::ErrorResponse(body) => {
                    return Err(ProtocolError::Server(server_error(&body)))
                }
                backend::Message::CopyDone => {
                    return Err(ProtocolError::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the server ended the replication stream",
                    )))
                }
                backend::Message::NoticeResponse(_) => {}
                _ => {
                    return Err(ProtocolError::Unexpected(
                        "in the replication stream".into(),
                    ))
                }
            }
        }
    }

    /// Standby status update: `flushed` is the position the sink has made durable.
    pub async fn send_status(
        &mut self,
        received: u64,
        flushed: u64,
        reply_requested: bool,
    ) -> Result<(), ProtocolError> {
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(received);
        payload.put_u64(flushed);
        payload.put_u64(flushed);
        payload.put_i64(pg_now());
        payload.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(payload.freeze())?.write(&mut self.write_buf);
        self.flush().await
    }

    /// Ends the copy cleanly (after a final status update) so the walsender exits at once.
    pub async fn finish(mut self) {
        frontend::copy_done(&mut self.write_buf);
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectParams;

    #[test]
    fn every_host_of_the_url_is_tried_with_its_port() {
        let params = ConnectParams::from_url("postgres://u:p@primary:5433,standby:5434/shop", None)
            .expect("parsed");
        assert_eq!(
            params.hosts,
            vec![("primary".to_string(), 5433), ("standby".to_string(), 5434)]
        );
        // as libpq: a host without a port has 5432
        let params = ConnectParams::from_url("postgres://u:p@a,b:6000/shop", None).expect("parsed");
        assert_eq!(
            params.hosts,
            vec![("a".to_string(), 5432), ("b".to_string(), 6000)]
        );
        let params = ConnectParams::from_url("postgres://u:p@a/shop", None).expect("parsed");
        assert_eq!(params.hosts, vec![("a".to_string(), 5432)]);
    }

    #[test]
    fn a_socket_host_is_refused_with_the_form() {
        let err = ConnectParams::from_url("postgres://u:p@%2Ftmp/shop", None).expect_err("refused");
        assert!(err.to_string().contains("Unix socket"), "{err}");
    }
}
