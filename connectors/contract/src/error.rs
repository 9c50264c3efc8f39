//! One error type for every connector, classified once — where it is created — as retryable
//! (the runtime retries with backoff) or definite (the pipeline stops and the message names the fix).

use std::error::Error as StdError;

/// What the runtime does with an error: the one classification, made where the error arises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// A transient condition (lost connection, server restarting, broker away): retry with backoff.
    Retryable,
    /// Retrying cannot help; a person must act. The message says what to do.
    Definite,
    /// The source no longer has the log position needed (binlog purged, slot lost): definite,
    /// unless the source may recover by copying the tables again (`snapshot = "when_needed"`).
    PositionLost,
}

/// An error raised by a source, a sink or the record encoder.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    pub class: ErrorClass,
    pub message: String,
    #[source]
    pub cause: Option<Box<dyn StdError + Send + Sync>>,
}

/// How long a connection to a server may take, TCP and handshake together: a server or path
/// that accepts and then says nothing (a black hole) would otherwise hold a reconnect forever.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl ConnectorError {
    /// A connection to `url` (already redacted) that did not complete in [`CONNECT_TIMEOUT`].
    pub fn connect_timed_out(what: &str, url: &str) -> Self {
        ConnectorError::retryable(format!(
            "{what} at {url}: no answer in {CONNECT_TIMEOUT:?}; check that the server is up and the network path to it is open. Retrying"
        ))
    }

    /// A transient failure; `message` says what failed.
    pub fn retryable(message: impl Into<String>) -> Self {
        ConnectorError {
            class: ErrorClass::Retryable,
            message: message.into(),
            cause: None,
        }
    }

    /// A failure that needs a person; `message` must say what to change.
    pub fn definite(message: impl Into<String>) -> Self {
        ConnectorError {
            class: ErrorClass::Definite,
            message: message.into(),
            cause: None,
        }
    }

    /// The log position needed is gone from the source; `message` says how to recover.
    pub fn position_lost(message: impl Into<String>) -> Self {
        ConnectorError {
            class: ErrorClass::PositionLost,
            ..ConnectorError::definite(message)
        }
    }

    pub fn caused_by(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.class == ErrorClass::Retryable
    }

    /// The source's log position is gone (see [`ErrorClass::PositionLost`]).
    pub fn is_position_lost(&self) -> bool {
        self.class == ErrorClass::PositionLost
    }

    /// The message followed by its chain of causes, for logs and the command line.
    pub fn report(&self) -> String {
        let mut text = self.message.clone();
        let mut cause = self
            .cause
            .as_deref()
            .map(|c| c as &(dyn StdError + 'static));
        while let Some(err) = cause {
            text.push_str(": ");
            text.push_str(&err.to_string());
            cause = err.source();
        }
        text
    }
}

impl From<std::io::Error> for ConnectorError {
    /// Local I/O failures (disk full, permissions) do not cure themselves by retrying.
    fn from(err: std::io::Error) -> Self {
        ConnectorError::definite(format!(
            "local file I/O failed ({err}); check free disk space and permissions of the state and sink directories"
        ))
        .caused_by(err)
    }
}

/// The outcome of one preflight check: what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub what: String,
    pub fix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Headwater refuses to start.
    Error,
    /// Headwater runs, with the limitation described.
    Warning,
}

impl Problem {
    pub fn error(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Error,
            what: what.into(),
            fix: fix.into(),
        }
    }

    pub fn warning(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Problem {
            severity: Severity::Warning,
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}\n  fix: {}", self.what, self.fix)
    }
}
