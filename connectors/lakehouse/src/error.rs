//! Object-store, Parquet and Arrow errors classified once, where they arise: a store that cannot
//! be reached is retried (the runtime resumes from the last commit, so nothing is lost); bad
//! data, a changed table or a refused write stops the pipeline with what to do. Each format
//! classifies its own errors first and hands the rest here.

use headwater_contract::ConnectorError;
use object_store::Error as ObjectStoreError;
#[cfg(test)]
use parquet::errors::ParquetError;
use std::error::Error as StdError;

/// `what` failed because of `err`.
pub fn lake_error<E>(what: &str, err: E) -> ConnectorError
where
    E: StdError + Send + Sync + 'static,
{
    let any: &(dyn StdError + 'static) = &err;
    let retry = if let Some(store) = any.downcast_ref::<ObjectStoreError>() {
        store_retryable(store)
    } else {
        // a file read back by byte ranges: the store's error, wrapped by the Parquet reader
        store_in_chain(any).is_some_and(store_retryable)
    };
    classified(what, any, retry)
}

/// The error for `what` failing because of `err`, retryable or not.
pub fn classified(what: &str, err: &(dyn StdError + 'static), retry: bool) -> ConnectorError {
    let cause = cause_once(err);
    if retry {
        ConnectorError::retryable(format!(
            "{what} failed ({cause}); retrying from the tables' last commits (if another program writes these tables, give Headwater a location of its own)"
        ))
    } else {
        ConnectorError::definite(format!(
            "{what} failed ({cause}); check free space, permissions and credentials of the sink's location. Nothing is lost: the next start resumes from the last commit"
        ))
    }
}

/// The error and its causes, each said once: delta-rs errors repeat their source's text in
/// their own, so a message already said is left out.
pub fn cause_once(err: &(dyn StdError + 'static)) -> String {
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

/// The object-store error under `err`, if any: delta-rs wraps them in several variants, and
/// the Parquet writer's `External` errors do not report their inner error as a source.
pub fn store_in_chain<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ObjectStoreError> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(store) = err.downcast_ref::<ObjectStoreError>() {
            return Some(store);
        }
        if let Some(parquet::errors::ParquetError::External(inner)) =
            err.downcast_ref::<parquet::errors::ParquetError>()
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

pub fn store_retryable(err: &ObjectStoreError) -> bool {
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
pub fn network_io(io: &std::io::Error) -> bool {
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
        assert!(lake_error("reading", refused()).is_retryable());
        // a file read back by byte ranges (a merge, a compaction)
        let ranged = ParquetError::External(Box::new(refused()));
        assert!(lake_error("reading keys", ranged).is_retryable());
        // the Parquet writer's buffered upload wraps the store's error in an io::Error
        let buffered = ParquetError::External(Box::new(std::io::Error::other(refused())));
        assert!(lake_error("writing", buffered).is_retryable());
        let corrupt = ParquetError::General("bad footer".into());
        assert!(!lake_error("reading keys", corrupt).is_retryable());
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
        assert!(!lake_error("writing", full).is_retryable());
        let denied = ObjectStoreError::PermissionDenied {
            path: "x".into(),
            source: Box::new(std::io::Error::other("denied")),
        };
        let error = lake_error("writing", denied);
        assert!(!error.is_retryable());
        assert!(error.report().contains("permissions"), "{}", error.report());
    }
}
