//! Delta, object-store and Parquet errors classified once, where they arise: a store that cannot
//! be reached is retried (the runtime resumes from the last commit, so nothing is lost); bad data,
//! a changed table or a refused write stops the pipeline with what to do.

use deltalake::parquet::errors::ParquetError;
use deltalake::{DeltaTableError, ObjectStoreError};
use headwater_contract::ConnectorError;
use std::error::Error as StdError;

/// `what` failed because of `err`.
pub fn delta_error<E>(what: &str, err: E) -> ConnectorError
where
    E: StdError + Send + Sync + 'static,
{
    let any: &(dyn StdError + 'static) = &err;
    let retry = if let Some(delta) = any.downcast_ref::<DeltaTableError>() {
        delta_retryable(delta)
    } else if let Some(store) = any.downcast_ref::<ObjectStoreError>() {
        store_retryable(store)
    } else if any.is::<ParquetError>() {
        // a file read back by byte ranges: the store's error, wrapped by the Parquet reader
        store_in_chain(any).is_some_and(store_retryable)
    } else {
        false
    };
    let cause = cause_once(any);
    if retry {
        ConnectorError::retryable(format!(
            "delta: {what} failed ({cause}); retrying from the tables' last commits (if another program writes these tables, give Headwater a path of its own)"
        ))
    } else {
        ConnectorError::definite(format!(
            "delta: {what} failed ({cause}); check free space, permissions and credentials of sink.path. Nothing is lost: the next start resumes from the last commit"
        ))
    }
}

/// The error and its causes, each said once: delta-rs errors repeat their source's text in
/// their own, so a message already said is left out.
fn cause_once(err: &(dyn StdError + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut cause = Some(err);
    while let Some(err) = cause {
        let text = err.to_string();
        let text = text.trim().trim_end_matches('.').to_string();
        if !text.is_empty() && !said.iter().any(|s| s.contains(&text)) {
            said.push(text);
        }
        cause = err.source();
    }
    said.join(": ")
}

fn delta_retryable(err: &DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError as T;
    match err {
        DeltaTableError::ObjectStore { source } => store_retryable(source),
        // A commit whose version "already exists" is most often our own: the store took the
        // put and the answer was lost (a server stopped mid-commit), and the retry was refused.
        // Restarting reads the table's real state and skips what it holds; a second writer
        // would keep failing here, and says so in the log each time.
        DeltaTableError::VersionAlreadyExists(_) => true,
        DeltaTableError::Transaction { source } => matches!(
            source,
            T::VersionAlreadyExists(_)
                | T::CommitConflict(_)
                | T::MaxCommitAttempts(_)
                | T::ObjectStore { .. }
        ),
        DeltaTableError::Io { .. } => false,
        DeltaTableError::Generic(text) => unreachable_store_text(text),
        DeltaTableError::KernelError(kernel) => kernel_retryable(kernel),
        other => store_in_chain(other).is_some_and(store_retryable),
    }
}

/// The Delta kernel (which reads the log) keeps the store's error as a field, not as a source,
/// so a chain walk does not find it: its variants are matched here.
fn kernel_retryable(err: &delta_kernel::Error) -> bool {
    use delta_kernel::Error as K;
    match err {
        K::Backtraced { source, .. } => kernel_retryable(source),
        K::ObjectStore(store) => store_retryable(store),
        K::Parquet(parquet) => store_in_chain(parquet).is_some_and(store_retryable),
        K::IOError(io) => network_io(io),
        other => store_in_chain(other).is_some_and(store_retryable),
    }
}

/// delta-rs turns some log-store errors into text (`DeltaTableError::Generic`), e.g. listing
/// the log for the latest version: a store that could not be reached is told by the object
/// store's own words, and a refusal (missing object, 401/403) is not.
fn unreachable_store_text(text: &str) -> bool {
    const REFUSALS: [&str; 6] = [
        "not found",
        "permission",
        "denied",
        "unauthenticated",
        "status 401",
        "status 403",
    ];
    let lower = text.to_ascii_lowercase();
    lower.contains("error interacting with object store")
        && !REFUSALS.iter().any(|refusal| lower.contains(refusal))
}

/// The object-store error under `err`, if any: delta-rs wraps them in several variants, and
/// the Parquet writer's `External` errors do not report their inner error as a source.
fn store_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ObjectStoreError> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(store) = err.downcast_ref::<ObjectStoreError>() {
            return Some(store);
        }
        if let Some(deltalake::parquet::errors::ParquetError::External(inner)) =
            err.downcast_ref::<deltalake::parquet::errors::ParquetError>()
        {
            if let Some(store) = store_in_chain(inner.as_ref()) {
                return Some(store);
            }
        }
        // an io::Error wrapping another error reports that error's source, not the error
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(store) = store_in_chain(inner) {
                return Some(store);
            }
        }
        cause = err.source();
    }
    None
}

fn store_retryable(err: &ObjectStoreError) -> bool {
    !matches!(
        err,
        ObjectStoreError::NotFound { .. }
            | ObjectStoreError::InvalidPath { .. }
            | ObjectStoreError::NotSupported { .. }
            | ObjectStoreError::PermissionDenied { .. }
            | ObjectStoreError::Unauthenticated { .. }
            | ObjectStoreError::UnknownConfigurationKey { .. }
            | ObjectStoreError::AlreadyExists { .. }
            | ObjectStoreError::Precondition { .. }
    ) && !local_io(err)
}

/// A filesystem failure (disk full, permissions) does not cure itself; a network one may.
fn local_io(err: &ObjectStoreError) -> bool {
    let mut cause = err.source();
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return !network_io(io);
        }
        cause = err.source();
    }
    false
}

/// An I/O error of a connection (which the next attempt may not meet), not of a disk.
fn network_io(io: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        io.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> ObjectStoreError {
        ObjectStoreError::Generic {
            store: "S3",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            )),
        }
    }

    #[test]
    fn an_unreachable_store_is_retried_however_deeply_wrapped() {
        let wrapped = DeltaTableError::Parquet {
            source: ParquetError::External(Box::new(refused())),
        };
        assert!(delta_error("writing", wrapped).is_retryable());
        // the Parquet writer's buffered upload wraps the store's error in an io::Error
        let buffered = DeltaTableError::Parquet {
            source: ParquetError::External(Box::new(std::io::Error::other(refused()))),
        };
        assert!(delta_error("writing", buffered).is_retryable());
        assert!(delta_error("reading", refused()).is_retryable());
        // a file read back by byte ranges (a merge, a compaction)
        let ranged = ParquetError::External(Box::new(refused()));
        assert!(delta_error("reading keys", ranged).is_retryable());
        let corrupt = ParquetError::General("bad footer".into());
        assert!(!delta_error("reading keys", corrupt).is_retryable());
    }

    #[test]
    fn a_store_error_delta_rs_turned_into_text_is_retried_unless_it_is_a_refusal() {
        // as the S3 outage test met it, listing the log for the latest version
        let lost = DeltaTableError::Generic(
            "Error interacting with object store: Generic S3 error: Error performing list request: Error performing GET http://127.0.0.1:46589/headwater?list-type=2 in 2.6s, after 10 retries - HTTP error: error sending request".into(),
        );
        assert!(delta_error("committing", lost).is_retryable());
        let forbidden = DeltaTableError::Generic(
            "Error interacting with object store: Generic S3 error: Client error with status 403 Forbidden".into(),
        );
        assert!(!delta_error("committing", forbidden).is_retryable());
        let other = DeltaTableError::Generic("Invalid table version: 3".into());
        assert!(!delta_error("committing", other).is_retryable());
    }

    #[test]
    fn a_store_error_the_kernel_met_reading_the_log_is_retried() {
        // as the S3 outage test met it: reading a commit of the log while the server was down
        let lost = DeltaTableError::KernelError(delta_kernel::Error::ObjectStore(refused()));
        assert!(delta_error("committing", lost).is_retryable());
        let backtraced = DeltaTableError::KernelError(delta_kernel::Error::Backtraced {
            source: Box::new(delta_kernel::Error::ObjectStore(refused())),
            backtrace: Box::new(std::backtrace::Backtrace::disabled()),
        });
        assert!(delta_error("committing", backtraced).is_retryable());
        let missing = DeltaTableError::KernelError(delta_kernel::Error::ObjectStore(
            ObjectStoreError::NotFound {
                path: "_delta_log/00000000000000000003.json".into(),
                source: Box::new(std::io::Error::other("gone")),
            },
        ));
        assert!(!delta_error("committing", missing).is_retryable());
        let bad = DeltaTableError::KernelError(delta_kernel::Error::Generic("bad log".into()));
        assert!(!delta_error("committing", bad).is_retryable());
    }

    #[test]
    fn a_full_disk_or_a_refused_permission_is_not_retried() {
        let full = ObjectStoreError::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "no space left",
            )),
        };
        assert!(!delta_error("writing", full).is_retryable());
        let denied = ObjectStoreError::PermissionDenied {
            path: "x".into(),
            source: Box::new(std::io::Error::other("denied")),
        };
        let error = delta_error("writing", denied);
        assert!(!error.is_retryable());
        assert!(error.report().contains("permissions"), "{}", error.report());
    }
}
