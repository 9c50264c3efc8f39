//! Delta, object-store and Parquet errors classified once, where they arise: a store that cannot
//! be reached is retried (the runtime resumes from the last commit, so nothing is lost); bad data,
//! a changed table or a refused write stops the pipeline with what to do.

use deltalake::{DeltaTableError, ObjectStoreError};
use headwater_contract::ConnectorError;
use headwater_lakehouse::error::{classified, network_io, store_in_chain, store_retryable};
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
    } else {
        store_in_chain(any).is_some_and(store_retryable)
    };
    classified(&format!("delta: {what}"), any, retry)
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

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::parquet::errors::ParquetError;

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
    fn an_unreachable_store_inside_a_delta_error_is_retried() {
        let wrapped = DeltaTableError::Parquet {
            source: ParquetError::External(Box::new(refused())),
        };
        assert!(delta_error("writing", wrapped).is_retryable());
        // the Parquet writer's buffered upload wraps the store's error in an io::Error
        let buffered = DeltaTableError::Parquet {
            source: ParquetError::External(Box::new(std::io::Error::other(refused()))),
        };
        assert!(delta_error("writing", buffered).is_retryable());
        // (bare store and Parquet errors: headwater_lakehouse::error's tests)
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
}
