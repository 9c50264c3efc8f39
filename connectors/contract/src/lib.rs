//! The contract between Headwater's runtime and its connectors: typed positions, the change
//! record model, the Avro envelope encoding, error classification, and the `Source`/`Sink` traits.

pub mod avro;
pub mod avro_json;
pub mod avro_scan;
pub mod backfill;
pub mod connector;
pub mod envelope;
pub mod error;
pub mod filter;
pub mod position;
pub mod record;
pub mod retention;
pub mod schema;
pub mod schema_history;

pub use backfill::{
    BackfillInbox, BackfillKind, BackfillRequest, BackfillState, Backfiller, Completed,
    SnapshotMode,
};
pub use connector::{
    Ack, AckSender, DurableWatch, EventReceiver, EventSender, Sink, Source, StreamContext,
};
pub use error::{ConnectorError, Problem, Retry, Severity, CONNECT_TIMEOUT};
pub use filter::{redact_url, TableFilter};
pub use position::{
    BinlogPosition, GtidSet, Lsn, MariadbGtid, MariadbGtidState, MysqlGtidSet, PgPosition,
    Position, ServerUuid,
};
pub use record::{
    ChangeRecord, MysqlSourceInfo, Op, PgSourceInfo, SchemaChangeRecord, SinkRecord,
    SnapshotMarker, SourceEvent, SourceInfo, StreamSchema, TransactionInfo,
};
pub use retention::{LogStatus, Retention};
pub use schema::{Column, ConnectorKind, FieldType, TableId, TableSchema};
