//! BEGIN and END records around each source transaction (`pipeline.transaction_events`), as
//! Debezium's `provide.transaction.metadata` writes them: END counts the transaction's changes
//! per table.

use headwater_contract::transactions::{encode_key, encode_value, TransactionCounts};
use headwater_contract::{ConnectorKind, Position, SourceEvent, StreamSchema};
use std::sync::Arc;

/// One BEGIN or END record, before the runtime numbers it.
pub struct TransactionRecord {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub position: Position,
}

struct Open {
    id: Arc<str>,
    ts_ms: i64,
    counts: TransactionCounts,
}

pub struct TransactionEvents {
    stream: Arc<StreamSchema>,
    open: Option<Open>,
}

impl TransactionEvents {
    pub fn new(server_name: &str, connector: ConnectorKind) -> Self {
        TransactionEvents {
            stream: Arc::new(StreamSchema::for_transactions(server_name, connector)),
            open: None,
        }
    }

    pub fn stream(&self) -> &Arc<StreamSchema> {
        &self.stream
    }

    /// The records to write before `event`: the open transaction's END when `event` commits it
    /// (a progress event) or belongs to another transaction, and a BEGIN when `event` starts
    /// one. `before` is the position of the last event written: a BEGIN carries it, so that
    /// its acknowledgement never moves the checkpoint past the change it precedes.
    pub fn before(
        &mut self,
        event: &SourceEvent,
        before: Option<&Position>,
    ) -> Vec<TransactionRecord> {
        let mut out = Vec::new();
        match event {
            SourceEvent::Progress(commit) => {
                if let Some(open) = self.open.take() {
                    out.push(Self::end(open, commit.clone()));
                }
            }
            SourceEvent::Change(change) => {
                let Some(tx) = &change.transaction else {
                    return out; // a snapshot row
                };
                if self.open.as_ref().is_some_and(|open| open.id != tx.id) {
                    if let (Some(open), Some(at)) = (self.open.take(), before) {
                        out.push(Self::end(open, at.clone()));
                    }
                }
                if self.open.is_none() {
                    if let Some(at) = before {
                        out.push(TransactionRecord {
                            key: encode_key(&tx.id),
                            value: encode_value(&tx.id, None, change.source.ts_ms()),
                            position: at.clone(),
                        });
                    }
                    self.open = Some(Open {
                        id: Arc::clone(&tx.id),
                        ts_ms: change.source.ts_ms(),
                        counts: TransactionCounts::default(),
                    });
                }
                if let Some(open) = &mut self.open {
                    open.counts.add(&change.table.id.to_string());
                }
            }
            SourceEvent::SchemaChange(_) => {}
        }
        out
    }

    fn end(open: Open, position: Position) -> TransactionRecord {
        TransactionRecord {
            key: encode_key(&open.id),
            value: encode_value(&open.id, Some(&open.counts), open.ts_ms),
            position,
        }
    }
}
