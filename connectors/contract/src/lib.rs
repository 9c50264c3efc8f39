//! The contract between Headwater's runtime and its connectors: typed positions, the change
//! record model, the Avro envelope encoding, error classification, and the `Source`/`Sink` traits.

pub mod avro;
pub mod avro_json;
pub mod avro_scan;
pub mod backfill;
pub mod columns;
pub mod connector;
pub mod envelope;
pub mod error;
pub mod filter;
pub mod flat;
pub mod position;
pub mod record;
pub mod registry;
pub mod retention;
pub mod schema;
pub mod schema_history;
pub mod transactions;

pub use backfill::{
    BackfillInbox, BackfillKind, BackfillRequest, BackfillState, Backfiller, Completed,
    SnapshotMode,
};
pub use columns::{
    BinaryHandling, ColumnPlan, ColumnRules, ColumnRulesConfig, DecimalHandling, ValueHandling,
};
pub use connector::{
    Ack, AckSender, DurableWatch, EventReceiver, EventSender, Sink, Source, StreamContext,
};
pub use error::{ConnectorError, ErrorClass, Problem, Severity, CONNECT_TIMEOUT};
pub use filter::{redact_url, TableFilter};
pub use flat::{EnvelopeKind, Flat, FlatDeletes, FlatField, Flattener};
pub use position::{
    BinlogPosition, GtidSet, Lsn, MariadbGtid, MariadbGtidState, MysqlGtidSet, PgPosition,
    Position, PositionText, ServerUuid,
};
pub use record::{
    ChangeRecord, MysqlFlavor, MysqlSourceInfo, Op, PgSourceInfo, SchemaChangeRecord, SinkRecord,
    SnapshotMarker, SnapshotRowPlace, SourceEvent, SourceInfo, StreamKind, StreamSchema,
    TransactionInfo,
};
pub use registry::{SinkConnector, SourceConnector};
pub use retention::{LogStatus, Retention};
pub use schema::{Column, ConnectorKind, FieldType, TableId, TableSchema};

/// Wall-clock milliseconds since the Unix epoch (0 for a clock set before 1970): commit times,
/// lag and the `ts_ms` of records.
pub fn now_ms() -> i64 {
    now_us().div_euclid(1000)
}

/// Wall-clock microseconds since the Unix epoch (0 for a clock set before 1970).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
