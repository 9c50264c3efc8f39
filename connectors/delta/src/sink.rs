//! The Delta sink: changes collected per table and committed in rounds. Every table changed in a
//! round gets one Delta commit carrying the round (`txn`) and the source position it covers;
//! then the round is recorded in `_headwater/sink.json` and its records acknowledged. A crash
//! between two tables' commits is repaired from the tables themselves: the next start resumes
//! from the last complete round and skips, per table, what that table already holds.

use crate::arrow_rows::delta_column_names;
use crate::changelog::Changelog;
use crate::config::{DeltaConfig, PartitionBy};
use crate::error::delta_error;
use crate::mirror::Mirror;
use crate::schema_changes::SchemaChanges;
use crate::table::DeltaTarget;
use async_trait::async_trait;
use deltalake::arrow::datatypes::Schema;
use deltalake::{DeltaTableBuilder, ObjectStore};
use headwater_contract::envelope::EnvelopeView;
use headwater_contract::{
    Ack, AckSender, ConnectorError, Position, Problem, Sink, SinkRecord, StreamSchema, TableId,
    TableSchema,
};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;
use url::Url;

const CHECKPOINT: &str = "_headwater/sink.json";

/// The last round committed to every table it touched.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    round: i64,
    position: Option<Position>,
}

/// The Delta tables of one source table.
struct Tables {
    mirror: Option<Mirror>,
    changelog: Option<Changelog>,
    key_columns: Vec<String>,
    /// The schema `key_columns` were named from (they are named again only when it changes).
    named_from: Option<Arc<TableSchema>>,
}

pub struct DeltaSink {
    config: DeltaConfig,
    base: Url,
    store: Arc<dyn ObjectStore>,
    acks: Option<AckSender>,
    tables: BTreeMap<String, Tables>,
    schema_changes: Option<SchemaChanges>,
    checkpoint: Checkpoint,
    /// Per Delta table: the position its own last commit covers, when past the checkpoint (a
    /// round that did not finish): records up to it are already there.
    holds: HashMap<String, Position>,
    /// A commit failed: see [`DeltaSink::commit`].
    broken: bool,
    /// The highest round any table or the checkpoint records.
    highest_round: i64,
    last_vacuum_at: Instant,
    pending_seq: Option<u64>,
    first_pending_at: Option<Instant>,
    /// Encoded bytes of the records since the last commit (see [`MAX_PENDING_BYTES`]).
    pending_bytes: usize,
    last_commit_at: Instant,
}

/// A round is committed early once its records add up to this many encoded bytes: pending
/// mirror entries and changelog columns take several times their encoded size in memory, and a
/// large transaction or a catch-up would otherwise grow a round to the pipeline's whole
/// in-flight window (the benchmark's 250,000 changes took 430 MB).
const MAX_PENDING_BYTES: usize = 16 << 20;

/// One Delta table as `headwater inspect` shows it.
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

/// `path` as a URL with a trailing slash (a directory).
pub fn base_url(path: &str) -> Result<Url, ConnectorError> {
    let bad = |e: String| {
        ConnectorError::definite(format!(
            "sink.path = {path:?} is not a directory or s3:// URL ({e}); e.g. path = \"./lake\" or \"s3://bucket/lake\""
        ))
    };
    let mut url = if path.starts_with("s3://") || path.starts_with("file://") {
        Url::parse(path).map_err(|e| bad(e.to_string()))?
    } else {
        std::fs::create_dir_all(path).map_err(|e| {
            ConnectorError::definite(format!(
                "delta: creating the directory {path} failed; check its parent exists and is writable"
            ))
            .caused_by(e)
        })?;
        let absolute = std::fs::canonicalize(path).map_err(|e| bad(e.to_string()))?;
        Url::from_directory_path(&absolute).map_err(|()| bad("not an absolute path".into()))?
    };
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

impl DeltaSink {
    pub fn new(config: DeltaConfig) -> Result<Self, ConnectorError> {
        config.validate().map_err(ConnectorError::definite)?;
        let base = base_url(&config.path)?;
        let storage: HashMap<String, String> = config.storage.clone().into_iter().collect();
        let store = DeltaTableBuilder::from_url(base.clone())
            .and_then(|b| b.with_storage_options(storage).build())
            .map_err(|e| delta_error(&format!("opening {base}"), e))?
            .object_store();
        Ok(DeltaSink {
            config,
            base,
            store,
            acks: None,
            tables: BTreeMap::new(),
            schema_changes: None,
            checkpoint: Checkpoint::default(),
            holds: HashMap::new(),
            broken: false,
            highest_round: 0,
            last_vacuum_at: Instant::now(),
            pending_seq: None,
            first_pending_at: None,
            pending_bytes: 0,
            last_commit_at: Instant::now(),
        })
    }

    fn table_url(&self, kind: &str, name: &str) -> Result<Url, ConnectorError> {
        self.base
            .join(&format!("{kind}/{}/", urlencode(name)))
            .map_err(|e| {
                ConnectorError::definite(format!("delta: table {name} has no valid location: {e}"))
            })
    }

    fn app_id(&self, kind: &str, name: &str) -> String {
        format!("headwater/{kind}/{name}")
    }

    async fn read_checkpoint(&mut self) -> Result<(), ConnectorError> {
        let path = deltalake::Path::from(CHECKPOINT);
        match self.store.get(&path).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| delta_error(&format!("reading {}{CHECKPOINT}", self.base), e))?;
                self.checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
                    ConnectorError::definite(format!(
                        "delta: {}{CHECKPOINT} is unreadable ({e}); delete it and Headwater rebuilds it from the tables' own commits",
                        self.base
                    ))
                })?;
            }
            Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
            Err(e) => {
                return Err(delta_error(
                    &format!("reading {}{CHECKPOINT}", self.base),
                    e,
                ))
            }
        }
        Ok(())
    }

    async fn write_checkpoint(&self) -> Result<(), ConnectorError> {
        let bytes = serde_json::to_vec_pretty(&self.checkpoint).map_err(|e| {
            ConnectorError::definite(format!("delta: encoding the checkpoint: {e}"))
        })?;
        self.store
            .put(&deltalake::Path::from(CHECKPOINT), bytes.into())
            .await
            .map_err(|e| delta_error(&format!("writing {}{CHECKPOINT}", self.base), e))?;
        Ok(())
    }

    /// The tables already under the path, opened.
    async fn existing_tables(&self) -> Result<Vec<DeltaTarget>, ConnectorError> {
        let mut targets = Vec::new();
        for kind in ["mirror", "changelog"] {
            let listing = self
                .store
                .list_with_delimiter(Some(&deltalake::Path::from(kind)))
                .await
                .map_err(|e| delta_error("listing the tables", e))?;
            for dir in listing.common_prefixes {
                let Some(name) = dir.filename().map(urldecode) else {
                    continue;
                };
                let target = DeltaTarget::open_or_create(
                    self.table_url(kind, &name)?,
                    format!("{kind} {name}"),
                    self.app_id(kind, &name),
                    &Schema::empty(),
                    Vec::new(),
                    &self.config,
                )
                .await?;
                targets.push(target);
            }
        }
        Ok(targets)
    }

    /// `headwater inspect`: the last complete round's position and every table's state.
    pub async fn summary(
        &mut self,
    ) -> Result<(Option<Position>, Vec<TableSummary>), ConnectorError> {
        self.read_checkpoint().await?;
        let mut tables = Vec::new();
        for target in self.existing_tables().await? {
            let files = target.live_files(None).await?;
            tables.push(TableSummary {
                label: target.label.clone(),
                version: target.version(),
                files: files.len(),
                rows: files.iter().filter_map(|f| f.rows).sum(),
                bytes: files.iter().map(|f| f.size).sum(),
                round: target.round,
                position: target.committed.clone(),
            });
        }
        Ok((self.checkpoint.position.clone(), tables))
    }

    /// Opens every table already under the path and learns how far each got.
    async fn recover(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.read_checkpoint().await?;
        let mut positions = Vec::new();
        for target in self.existing_tables().await? {
            let label = target.label.clone();
            {
                // a table ahead of the checkpoint (its round's checkpoint was not written, or a
                // later round covered less of the log) skips what it already holds; positions
                // rather than rounds decide, since a table's position never goes back
                if let Some(position) = &target.committed {
                    let ahead = match &self.checkpoint.position {
                        Some(checkpoint) => position > checkpoint,
                        None => true,
                    };
                    if ahead {
                        self.holds.insert(label.clone(), position.clone());
                    }
                }
                if let Some(position) = &target.committed {
                    positions.push(position.clone());
                }
                self.highest_round = self.highest_round.max(target.round);
                tracing::info!(table = %label, round = target.round, position = ?target.committed.as_ref().map(ToString::to_string), "delta: found table");
            }
        }
        if self.checkpoint.position.is_some() {
            return Ok(self.checkpoint.position.clone());
        }
        // no checkpoint (a new sink, or the file was deleted): the oldest table position is
        // safe, since every table skips what it already holds
        let oldest = positions
            .into_iter()
            .reduce(|a, b| if b < a { b } else { a });
        if oldest.is_some() {
            tracing::warn!(
                "delta: {CHECKPOINT} is missing; resuming from the oldest table position"
            );
        }
        Ok(oldest)
    }

    async fn tables_for(
        &mut self,
        stream: &StreamSchema,
        table: &Arc<TableSchema>,
    ) -> Result<&mut Tables, ConnectorError> {
        let name = stream.default_name();
        if !self.tables.contains_key(&name) {
            if name.contains(['/', '\\']) {
                // the store would read it as directories (`a/b`, or `../x` outside sink.path)
                return Err(ConnectorError::definite(format!(
                    "delta: table {} has a '/' or '\\' in its name, which a Delta table's directory cannot hold; leave it out with source.exclude, rename it, or capture it with the lake sink (kind = \"lake\"), which escapes such names",
                    table.id
                )));
            }
            let partitioned = self.config.partition_by == PartitionBy::Day;
            let soft = self.config.deletes == crate::config::Deletes::Soft;
            let names = delta_column_names(table);
            let key_columns: Vec<String> = table
                .primary_key
                .iter()
                .map(|i| names[*i].clone())
                .collect();
            let mirror = if self.config.tables.mirror() && !key_columns.is_empty() {
                let fields = Mirror::initial_fields(table, soft);
                let target = DeltaTarget::open_or_create(
                    self.table_url("mirror", &name)?,
                    format!("mirror {name}"),
                    self.app_id("mirror", &name),
                    &Schema::new(fields),
                    Vec::new(),
                    &self.config,
                )
                .await?;
                Some(Mirror::new(target, soft))
            } else {
                None
            };
            let changelog = if self.config.tables.changelog() {
                let fields = Changelog::initial_fields(table, partitioned);
                let target = DeltaTarget::open_or_create(
                    self.table_url("changelog", &name)?,
                    format!("changelog {name}"),
                    self.app_id("changelog", &name),
                    &Schema::new(fields),
                    Changelog::partition_columns(partitioned),
                    &self.config,
                )
                .await?;
                Some(Changelog::new(target, partitioned))
            } else {
                None
            };
            self.tables.insert(
                name.clone(),
                Tables {
                    mirror,
                    changelog,
                    key_columns,
                    named_from: Some(Arc::clone(table)),
                },
            );
        }
        let tables = self
            .tables
            .get_mut(&name)
            .ok_or_else(|| ConnectorError::definite("delta: internal error, table missing"))?;
        if !tables
            .named_from
            .as_ref()
            .is_some_and(|named| Arc::ptr_eq(named, table))
        {
            let names = delta_column_names(table);
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

    async fn write_change(&mut self, record: &SinkRecord) -> Result<(), ConnectorError> {
        let stream = Arc::clone(&record.stream);
        let Some(table) = stream.table_schema.clone() else {
            return self.write_schema_change(record).await;
        };
        let Some(op) = record.op else { return Ok(()) };
        let envelope = EnvelopeView::parse(&record.value, &table, stream.connector)
            .map_err(|e| ConnectorError::definite(format!("delta: {e}")))?;
        // a replay after a restart skips what each table holds; after it, nothing is held
        let (skip_mirror, skip_changelog) = if self.holds.is_empty() {
            (false, false)
        } else {
            let name = stream.default_name();
            (
                self.already_held(&format!("mirror {name}"), &record.position),
                self.already_held(&format!("changelog {name}"), &record.position),
            )
        };
        let tables = self.tables_for(&stream, &table).await?;
        if let (Some(mirror), false) = (&mut tables.mirror, skip_mirror) {
            mirror.apply(
                &table,
                op,
                envelope.before,
                envelope.after,
                envelope.source_ts_ms,
                &record.position,
            )?;
        }
        if let (Some(changelog), false) = (&mut tables.changelog, skip_changelog) {
            changelog.append(&table, op, &envelope, &record.position)?;
        }
        Ok(())
    }

    async fn write_schema_change(&mut self, record: &SinkRecord) -> Result<(), ConnectorError> {
        let name = record.stream.default_name();
        if self.already_held(&format!("changelog {name}"), &record.position) {
            return Ok(());
        }
        if self.schema_changes.is_none() {
            let target = DeltaTarget::open_or_create(
                self.table_url("changelog", &name)?,
                format!("changelog {name}"),
                self.app_id("changelog", &name),
                &SchemaChanges::schema(),
                Vec::new(),
                &self.config,
            )
            .await?;
            self.schema_changes = Some(SchemaChanges::new(target));
        }
        if let Some(log) = &mut self.schema_changes {
            log.append(&record.value, record.stream.connector, &record.position)?;
        }
        Ok(())
    }

    /// Commits one round: every table with pending changes, then the checkpoint, then the acks.
    /// Commits a round; a round that failed half-way has taken its rows with it, so the sink
    /// refuses every later round (the next start resumes from the tables' own commits).
    async fn commit(&mut self, through: &Position) -> Result<(), ConnectorError> {
        if self.broken {
            return Err(ConnectorError::definite(
                "delta: an earlier commit of this run failed; nothing more is committed until the pipeline starts again (it resumes from the tables' last commits)",
            ));
        }
        let committed = self.commit_round(through).await;
        self.broken = committed.is_err();
        committed
    }

    async fn commit_round(&mut self, through: &Position) -> Result<(), ConnectorError> {
        if self.pending_seq.is_none() && self.checkpoint.position.as_ref() == Some(through) {
            return Ok(());
        }
        let round = self.checkpoint.round.max(self.highest_round) + 1;
        self.highest_round = round;
        let started = Instant::now();
        let mut changes = 0;
        let mut merged = crate::mirror::MergeStats::default();
        for tables in self.tables.values_mut() {
            if let Some(changelog) = &mut tables.changelog {
                if changelog.has_pending() {
                    changes += changelog.commit(round, through).await?;
                }
            }
            if let Some(mirror) = &mut tables.mirror {
                if mirror.has_pending() {
                    let stats = mirror.commit(round, through, &tables.key_columns).await?;
                    merged.changed_keys += stats.changed_keys;
                    merged.files_rewritten += stats.files_rewritten;
                    merged.rows_carried += stats.rows_carried;
                }
            }
        }
        if let Some(log) = &mut self.schema_changes {
            if log.has_pending() {
                log.commit(round, through).await?;
            }
        }
        self.checkpoint = Checkpoint {
            round,
            position: Some(through.clone()),
        };
        self.write_checkpoint().await?;
        // a replay may take several rounds to pass what a table already holds
        self.holds.retain(|_, held| &*held > through);
        tracing::debug!(round, changes, ?merged, elapsed = ?started.elapsed(), position = %through, "delta commit");
        self.first_pending_at = None;
        self.pending_bytes = 0;
        self.last_commit_at = Instant::now();
        if let (Some(seq), Some(acks)) = (self.pending_seq.take(), &self.acks) {
            acks.ack(Ack::Through(seq));
        }
        self.maintain(Some(round)).await
    }

    /// Compacts the tables this round touched; vacuums every table now and then.
    async fn maintain(&mut self, round: Option<i64>) -> Result<(), ConnectorError> {
        let (min_files, target_size) =
            (self.config.compact_min_files, self.config.target_file_size);
        let vacuum_due = self.last_vacuum_at.elapsed() >= self.config.vacuum_interval;
        let retention = self.config.vacuum_retention;
        let mut vacuumed = 0;
        let mut targets: Vec<(&mut DeltaTarget, &[String])> = Vec::new();
        for tables in self.tables.values_mut() {
            let keys = tables.key_columns.as_slice();
            if let Some(mirror) = &mut tables.mirror {
                targets.push((&mut mirror.target, keys));
            }
            if let Some(changelog) = &mut tables.changelog {
                targets.push((&mut changelog.target, &[]));
            }
        }
        if let Some(log) = &mut self.schema_changes {
            targets.push((&mut log.target, &[]));
        }
        for (target, sort_by) in targets {
            if round == Some(target.round) {
                target.compact(min_files, target_size, sort_by).await?;
            }
            if vacuum_due {
                vacuumed += target.vacuum(retention).await?;
            }
        }
        if vacuum_due {
            self.last_vacuum_at = Instant::now();
            tracing::debug!(files = vacuumed, "delta: vacuum done");
        }
        Ok(())
    }
}

/// The position of the last complete round of a local Delta sink, read without opening it
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
    let checkpoint: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| {
        ConnectorError::definite(format!("delta: {} is unreadable ({e})", file.display()))
    })?;
    Ok(checkpoint.position)
}

/// Table names may hold characters a path cannot; keep them readable where possible.
fn urlencode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn urldecode(name: &str) -> String {
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
impl Sink for DeltaSink {
    async fn check(&mut self) -> Result<Vec<Problem>, ConnectorError> {
        let probe = deltalake::Path::from("_headwater/check");
        let result = match self.store.put(&probe, b"headwater".to_vec().into()).await {
            Ok(_) => self.store.delete(&probe).await,
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok(()) => Vec::new(),
            Err(err) => vec![Problem::error(
                format!("the Delta location {} is not writable ({err})", self.base),
                "point sink.path at a directory this user can write, or check the S3 endpoint and credentials (sink.storage or AWS_* variables)",
            )],
        })
    }

    fn check_keyless_tables(&self, tables: &[TableId]) -> Vec<Problem> {
        if !self.config.tables.mirror() {
            return Vec::new();
        }
        tables
            .iter()
            .map(|table| {
                Problem::warning(
                    format!("{table} has no primary key: it gets a Delta changelog table and no mirror (a mirror row is found by its key)"),
                    format!("add a primary key to {table} and restart the pipeline for a mirror (`headwater backfill --table {table}` then copies the rows it already has)"),
                )
            })
            .collect()
    }

    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError> {
        let position = self.recover().await?;
        self.acks = Some(acks);
        Ok(position)
    }

    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        self.write_change(&record).await?;
        self.pending_seq = Some(record.seq);
        self.first_pending_at.get_or_insert_with(Instant::now);
        self.pending_bytes += record.value.len();
        if self.pending_bytes >= MAX_PENDING_BYTES {
            // the record's position covers it and everything before it
            self.commit(&record.position).await?;
        }
        Ok(())
    }

    async fn tick(&mut self, through: &Position) -> Result<(), ConnectorError> {
        let due = match self.first_pending_at {
            Some(since) => since.elapsed() >= self.config.commit_interval,
            None => self.last_commit_at.elapsed() >= self.config.commit_interval,
        };
        if due {
            self.commit(through).await?;
        }
        if self.last_vacuum_at.elapsed() >= self.config.vacuum_interval {
            // a quiet pipeline still deletes what its last compactions replaced
            self.maintain(None).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, through: &Position) -> Result<(), ConnectorError> {
        self.commit(through).await
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
