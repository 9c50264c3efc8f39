//! The lakehouse sink: changes collected per table and committed in rounds. Every table changed
//! in a round gets one commit of its format carrying the round (`txn`) and the source position it covers;
//! then the round is recorded in `_headwater/sink.json` and its records acknowledged. A crash
//! between two tables' commits is repaired from the tables themselves: the next start resumes
//! from the last complete round and skips, per table, what that table already holds.

use crate::arrow_rows::lake_column_names;
use crate::changelog::Changelog;
use crate::committer::{Checkpoint, Committer, Round, TableRound, CHECKPOINT};
use crate::format::{TableFormat, TableTarget};
use crate::mirror::Mirror;
use crate::options::{Deletes, PartitionBy, TableOptions};
use crate::schema_changes::SchemaChanges;
use async_trait::async_trait;
use headwater_contract::envelope::EnvelopeView;
use headwater_contract::{
    AckSender, ConnectorError, Op, Position, PositionText, Problem, Sink, SinkRecord, StreamKind,
    StreamSchema, TableId, TableSchema,
};
use object_store::ObjectStoreExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;

/// The pending changes of one source table.
struct Tables {
    mirror: Option<Mirror>,
    changelog: Option<Changelog>,
    key_columns: Vec<String>,
    /// The schema `key_columns` were named from (they are named again only when it changes).
    named_from: Option<Arc<TableSchema>>,
}

/// A committer at work on a round, and what it hands back.
type InFlight<F> = JoinHandle<(Committer<F>, Result<(), ConnectorError>)>;

pub struct LakehouseSink<F: TableFormat> {
    options: Arc<TableOptions>,
    format: Arc<F>,
    tables: BTreeMap<String, Tables>,
    schema_changes: Option<SchemaChanges>,
    /// The tables; `None` while a round commits on a task of its own (`in_flight`).
    committer: Option<Committer<F>>,
    in_flight: Option<InFlight<F>>,
    /// Per table: the position its own last commit covers, when past the checkpoint (a
    /// round that did not finish): records up to it are already there.
    holds: HashMap<String, Position>,
    /// A commit failed: see [`LakehouseSink::commit`].
    broken: bool,
    /// The highest round any table or the checkpoint records, or any round handed over since.
    highest_round: i64,
    /// The position the last round handed over covers.
    last_round_through: Option<Position>,
    pending_seq: Option<u64>,
    first_pending_at: Option<Instant>,
    /// Encoded bytes of the records since the last commit (see [`MAX_PENDING_BYTES`]).
    pending_bytes: usize,
    last_commit_at: Instant,
    /// Every row's lineage names its log position; the GTID set is formatted once per set.
    position_text: PositionText,
    lineage: String,
    /// The stream of the last change and its table name (named once per stream, not per change).
    named_stream: Option<(Arc<StreamSchema>, Arc<str>)>,
}

/// A round is handed over early once its records add up to this many encoded bytes: pending
/// mirror entries and changelog columns take several times their encoded size in memory, and
/// one round is gathered while the one before commits; a large transaction or a catch-up would
/// otherwise grow a round to the pipeline's whole in-flight window (the benchmark's 250,000
/// changes took 430 MB).
const MAX_PENDING_BYTES: usize = 16 << 20;

/// One table as `headwater inspect` shows it.
#[derive(Debug, Clone)]
pub struct TableSummary {
    /// `mirror <name>` or `changelog <name>`.
    pub label: String,
    pub version: Option<u64>,
    pub files: usize,
    pub rows: usize,
    pub bytes: i64,
    pub round: i64,
    pub position: Option<Position>,
}

impl<F: TableFormat> LakehouseSink<F> {
    pub fn new(format: F, options: TableOptions) -> Result<Self, ConnectorError> {
        options.validate().map_err(ConnectorError::definite)?;
        let options = Arc::new(options);
        let format = Arc::new(format);
        Ok(LakehouseSink {
            committer: Some(Committer::new(Arc::clone(&options), Arc::clone(&format))),
            options,
            format,
            tables: BTreeMap::new(),
            schema_changes: None,
            in_flight: None,
            holds: HashMap::new(),
            broken: false,
            highest_round: 0,
            last_round_through: None,
            pending_seq: None,
            first_pending_at: None,
            pending_bytes: 0,
            last_commit_at: Instant::now(),
            position_text: PositionText::default(),
            lineage: String::new(),
            named_stream: None,
        })
    }

    /// The committer, once the round it is at (if any) has finished; that round's error, if
    /// it failed, and from then on the refusal of [`LakehouseSink::commit`].
    async fn committer(&mut self) -> Result<&mut Committer<F>, ConnectorError> {
        if let Some(in_flight) = self.in_flight.take() {
            match in_flight.await {
                Ok((committer, result)) => {
                    self.committer = Some(committer);
                    if let Err(e) = result {
                        self.broken = true;
                        return Err(e);
                    }
                }
                Err(e) => {
                    self.broken = true;
                    return Err(ConnectorError::definite(format!(
                        "{}: a commit stopped before it finished ({e}); start the pipeline again (it resumes from the tables' last commits)",
                        F::NAME
                    )));
                }
            }
        }
        if self.broken {
            return Err(ConnectorError::definite(format!(
                "{}: an earlier commit of this run failed; nothing more is committed until the pipeline starts again (it resumes from the tables' last commits)",
                F::NAME
            )));
        }
        self.committer.as_mut().ok_or_else(|| {
            ConnectorError::definite(format!("{}: internal error, no committer", F::NAME))
        })
    }

    /// `headwater inspect`: the last complete round's position and every table's state.
    pub async fn summary(
        &mut self,
    ) -> Result<(Option<Position>, Vec<TableSummary>), ConnectorError> {
        let committer = self.committer().await?;
        committer.read_checkpoint().await?;
        let mut tables = Vec::new();
        for target in committer.existing_tables().await? {
            let files = target.live_files(None).await?;
            tables.push(TableSummary {
                label: target.label().to_string(),
                version: target.version(),
                files: files.len(),
                rows: files.iter().filter_map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.size).sum(),
                round: target.round(),
                position: target.committed().cloned(),
            });
        }
        Ok((committer.checkpoint().position.clone(), tables))
    }

    /// The name of `stream`'s table (`<server>.<namespace>.<table>`).
    fn stream_name(&mut self, stream: &Arc<StreamSchema>) -> Arc<str> {
        match &self.named_stream {
            Some((named, name)) if Arc::ptr_eq(named, stream) => Arc::clone(name),
            _ => {
                let name: Arc<str> = stream.default_name().into();
                self.named_stream = Some((Arc::clone(stream), Arc::clone(&name)));
                name
            }
        }
    }

    /// Opens the tables of `name` (a new table in this run).
    async fn open_tables_for(
        &mut self,
        name: &str,
        table: &Arc<TableSchema>,
    ) -> Result<(), ConnectorError> {
        if let Some(refusal) = self.format.refuse_name(name) {
            return Err(ConnectorError::definite(format!(
                "{}: table {} {refusal}; leave it out with source.exclude, rename it, or capture it with the lake sink (kind = \"lake\"), which escapes such names",
                F::NAME,
                table.id
            )));
        }
        let names = lake_column_names(table);
        let key_columns: Vec<String> = table
            .primary_key
            .iter()
            .map(|i| names[*i].clone())
            .collect();
        // a new table waits for the round in flight: the committer opens its tables
        let (mirror, changelog) = self
            .committer()
            .await?
            .open_tables(name, table, &key_columns)
            .await?;
        let partitioned = self.options.partition_by == PartitionBy::Day;
        let soft = self.options.deletes == Deletes::Soft;
        self.tables.insert(
            name.to_string(),
            Tables {
                mirror: mirror.then(|| Mirror::new(soft)),
                changelog: changelog
                    .then(|| Changelog::new(format!("changelog {name}"), partitioned)),
                key_columns,
                named_from: Some(Arc::clone(table)),
            },
        );
        Ok(())
    }

    /// The pending changes of `name`, opened before (see [`Self::open_tables_for`]).
    fn tables_for(
        &mut self,
        name: &str,
        table: &Arc<TableSchema>,
    ) -> Result<&mut Tables, ConnectorError> {
        let tables = self.tables.get_mut(name).ok_or_else(|| {
            ConnectorError::definite(format!("{}: internal error, table missing", F::NAME))
        })?;
        if !tables
            .named_from
            .as_ref()
            .is_some_and(|named| Arc::ptr_eq(named, table))
        {
            let names = lake_column_names(table);
            tables.key_columns = table
                .primary_key
                .iter()
                .map(|i| names[*i].clone())
                .collect();
            tables.named_from = Some(Arc::clone(table));
        }
        Ok(tables)
    }

    fn already_held(&self, label: &str, position: &Position) -> bool {
        self.holds.get(label).is_some_and(|held| position <= held)
    }

    /// The text of `position` without backfill progress, in `self.lineage`.
    fn format_lineage(&mut self, position: &Position) {
        self.lineage.clear();
        self.position_text
            .write_without_backfill(position, &mut self.lineage);
    }

    async fn write_change(&mut self, record: &SinkRecord) -> Result<(), ConnectorError> {
        // borrowed, not cloned: a reference count bumped per record on schemas every thread
        // touches costs more than the rest of the bookkeeping
        let stream = &record.stream;
        if stream.kind == StreamKind::Transactions {
            // tables have no place for them: each changelog row carries its transaction id
            return Ok(());
        }
        let Some(table) = &stream.table_schema else {
            return Box::pin(self.write_schema_change(record)).await;
        };
        let Some(op) = record.op else { return Ok(()) };
        let envelope = EnvelopeView::parse(&record.value, table, stream.connector)
            .map_err(|e| ConnectorError::definite(format!("{}: {e}", F::NAME)))?;
        let name = self.stream_name(stream);
        // a replay after a restart skips what each table holds; after it, nothing is held
        let (skip_mirror, skip_changelog) = if self.holds.is_empty() {
            (false, false)
        } else {
            (
                self.already_held(&format!("mirror {name}"), &record.position),
                self.already_held(&format!("changelog {name}"), &record.position),
            )
        };
        self.format_lineage(&record.position);
        let lineage = std::mem::take(&mut self.lineage);
        let applied = self
            .apply_change(
                &name,
                table,
                op,
                &envelope,
                &lineage,
                (skip_mirror, skip_changelog),
            )
            .await;
        self.lineage = lineage;
        applied
    }

    /// Applies one change to the pending rows of `name`'s tables but those `held` (mirror,
    /// changelog) already hold.
    async fn apply_change(
        &mut self,
        name: &str,
        table: &Arc<TableSchema>,
        op: Op,
        envelope: &EnvelopeView<'_>,
        lineage: &str,
        (skip_mirror, skip_changelog): (bool, bool),
    ) -> Result<(), ConnectorError> {
        if !self.tables.contains_key(name) {
            // boxed: the future of opening a table is large, and it would otherwise be moved
            // on every change's write (a tenth of the sink's time)
            Box::pin(self.open_tables_for(name, table)).await?;
        }
        let tables = self.tables_for(name, table)?;
        // the changelog first: the mirror takes the row it decoded rather than decoding again
        let mut in_changelog = None;
        if let (Some(changelog), false) = (&mut tables.changelog, skip_changelog) {
            in_changelog = Some(changelog.append(table, op, envelope, lineage)?);
        }
        if let (Some(mirror), false) = (&mut tables.mirror, skip_mirror) {
            mirror.apply(table, op, envelope, lineage, in_changelog)?;
        }
        Ok(())
    }

    async fn write_schema_change(&mut self, record: &SinkRecord) -> Result<(), ConnectorError> {
        let name = record.stream.default_name();
        if self.already_held(&format!("changelog {name}"), &record.position) {
            return Ok(());
        }
        if self.schema_changes.is_none() {
            self.committer().await?.open_schema_changes(&name).await?;
            self.schema_changes = Some(SchemaChanges::default());
        }
        self.format_lineage(&record.position);
        if let Some(log) = &mut self.schema_changes {
            log.append(&record.value, record.stream.connector, &self.lineage)?;
        }
        Ok(())
    }

    /// Hands the pending changes over as one round covering `through`, once the round before
    /// has finished: the committer commits it on a task of its own. A round that failed
    /// half-way has taken its rows with it, so the sink refuses every later round (the next
    /// start resumes from the tables' own commits).
    async fn commit(&mut self, through: &Position) -> Result<(), ConnectorError> {
        self.committer().await?;
        if self.pending_seq.is_none() && self.last_round_through.as_ref() == Some(through) {
            return Ok(());
        }
        let round = self.take_round(through)?;
        let Some(mut committer) = self.committer.take() else {
            return Err(ConnectorError::definite(format!(
                "{}: internal error, no committer",
                F::NAME
            )));
        };
        self.in_flight = Some(tokio::spawn(async move {
            let result = committer.commit_round(round).await;
            (committer, result)
        }));
        Ok(())
    }

    fn take_round(&mut self, through: &Position) -> Result<Round, ConnectorError> {
        self.highest_round += 1;
        let mut tables = BTreeMap::new();
        for (name, pending) in &mut self.tables {
            let changelog = match &mut pending.changelog {
                Some(rows) if rows.has_pending() => Some(rows.take_round()?),
                _ => None,
            };
            let mirror = match &mut pending.mirror {
                Some(keys) if keys.has_pending() => {
                    let rows = changelog.as_ref().map_or(&[][..], |c| c.batches());
                    Some(keys.take_round(rows))
                }
                _ => None,
            };
            if changelog.is_some() || mirror.is_some() {
                let key_columns = pending.key_columns.clone();
                tables.insert(
                    name.clone(),
                    TableRound {
                        mirror,
                        changelog,
                        key_columns,
                    },
                );
            }
        }
        let schema_changes = match &mut self.schema_changes {
            Some(log) if log.has_pending() => Some(log.take_round("schema changes")?),
            _ => None,
        };
        // a replay may take several rounds to pass what a table already holds
        self.holds.retain(|_, held| &*held > through);
        self.last_round_through = Some(through.clone());
        self.first_pending_at = None;
        self.pending_bytes = 0;
        self.last_commit_at = Instant::now();
        Ok(Round {
            number: self.highest_round,
            through: through.clone(),
            tables,
            schema_changes,
            ack: self.pending_seq.take(),
        })
    }

    /// Waits for the round in flight; its error, if it failed.
    async fn finish_round(&mut self) -> Result<(), ConnectorError> {
        self.committer().await.map(|_| ())
    }
}

/// The position of the last complete round of a local lakehouse sink at `path`, read without opening it
/// (`headwater status` on a stopped pipeline). `None` for S3 paths: the runtime's own
/// checkpoint file stands in for them.
pub fn committed_position(path: &str) -> Result<Option<Position>, ConnectorError> {
    if path.starts_with("s3://") {
        return Ok(None);
    }
    let local = path.strip_prefix("file://").unwrap_or(path);
    let file = std::path::Path::new(local).join(CHECKPOINT);
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let checkpoint: Checkpoint = serde_json::from_slice(&bytes)
        .map_err(|e| ConnectorError::definite(format!("{} is unreadable ({e})", file.display())))?;
    Ok(checkpoint.position)
}

/// Table names may hold characters a path cannot; keep them readable where possible.
pub fn urlencode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

pub fn urldecode(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' && at + 2 < bytes.len() {
            // by bytes: a directory someone else made may hold `%` before a non-ASCII letter
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).ok();
            if let Some(byte) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(byte);
                at += 3;
                continue;
            }
        }
        out.push(bytes[at]);
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait]
impl<F: TableFormat> Sink for LakehouseSink<F> {
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        let probe = object_store::path::Path::from("_headwater/check");
        let store = self.format.store();
        let result = match store.put(&probe, b"headwater".to_vec().into()).await {
            Ok(_) => store.delete(&probe).await,
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok(()) => Vec::new(),
            Err(err) => vec![Problem::error(
                format!("the {} location {} is not writable ({err})", F::TITLE, self.format.location()),
                "point the sink's location at a directory this user can write, or check the S3 endpoint and credentials (sink.storage or AWS_* variables)",
            )],
        })
    }

    fn check_keyless_tables(&self, tables: &[TableId]) -> Vec<Problem> {
        if !self.options.tables.mirror() {
            return Vec::new();
        }
        tables
            .iter()
            .map(|table| {
                Problem::warning(
                    format!("{table} has no primary key: it gets a {} changelog table and no mirror (a mirror row is found by its key)", F::TITLE),
                    format!("add a primary key to {table} and restart the pipeline for a mirror (`headwater backfill --table {table}` then copies the rows it already has)"),
                )
            })
            .collect()
    }

    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError> {
        let committer = self.committer().await?;
        let recovered = committer.recover().await?;
        committer.set_acks(acks);
        self.holds = recovered.holds;
        self.highest_round = recovered.highest_round;
        self.last_round_through = recovered.position.clone();
        Ok(recovered.position)
    }

    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        self.write_change(&record).await?;
        self.pending_seq = Some(record.seq);
        self.first_pending_at.get_or_insert_with(Instant::now);
        self.pending_bytes += record.value.len();
        if self.pending_bytes >= MAX_PENDING_BYTES {
            // the record's position covers it and everything before it
            Box::pin(self.commit(&record.position)).await?;
        }
        Ok(())
    }

    async fn tick(&mut self, through: Option<&Position>) -> Result<(), ConnectorError> {
        let due = match self.first_pending_at {
            Some(since) => since.elapsed() >= self.options.commit_interval,
            None => self.last_commit_at.elapsed() >= self.options.commit_interval,
        };
        if self.in_flight.as_ref().is_some_and(JoinHandle::is_finished) {
            // a failed round stops the pipeline now, not at the next commit
            self.finish_round().await?;
        }
        if let (true, Some(through)) = (due, through) {
            self.commit(through).await?;
        }
        if let Some(committer) = &mut self.committer {
            if committer.vacuum_due() {
                // a quiet pipeline still deletes what its last compactions replaced
                committer.maintain(None).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, through: &Position) -> Result<(), ConnectorError> {
        self.commit(through).await?;
        self.finish_round().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_round_trip_through_paths() {
        for name in ["srv.shop.orders", "srv.my db.\"odd\" name", "srv.é.ü%"] {
            assert_eq!(urldecode(&urlencode(name)), name);
        }
        assert_eq!(urlencode("srv.shop.orders"), "srv.shop.orders");
        // not ours, but listed beside ours: read without a panic
        assert_eq!(urldecode("%aé"), "%aé");
        assert_eq!(urldecode("100%"), "100%");
    }
}
