//! Reading the next binlog event off the stream `mysql_async` gives.

use crate::guard::panic_message;
use futures_util::StreamExt;
use mysql_common::binlog::events::Event;

/// Why the next binlog event could not be had.
pub enum ReadFailure {
    Server(mysql_async::Error),
    /// `mysql_common` panicked reading the event's bytes: it slices an event to the length its
    /// header gives, and its checksum off the end, without checking (found by fuzzing).
    Malformed(String),
}

/// The next event of the stream, with a panic of the event parser turned into an error: a
/// corrupt event stops the pipeline with a message, not a crash of the process.
pub async fn next_event(
    binlog: &mut mysql_async::BinlogStream,
) -> Option<Result<Event, ReadFailure>> {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(binlog.next())
        .catch_unwind()
        .await
    {
        Ok(next) => next.map(|event| event.map_err(ReadFailure::Server)),
        Err(panic) => Some(Err(ReadFailure::Malformed(panic_message(panic.as_ref())))),
    }
}
