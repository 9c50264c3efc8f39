//! The lake sink: records are appended to per-table temporary files; a commit makes the files
//! durable, records them with the source position in the manifest (atomically), then publishes
//! them under their final names and acknowledges their records.

use crate::config::LakeConfig;
use crate::manifest::{CommittedFile, Manifest, MANIFEST_PATH, MANIFEST_VERSION};
use crate::ocf::ContainerWriter;
use crate::store::{LakeStore, LocalStore};
use async_trait::async_trait;
use headwater_contract::{
    Ack, AckSender, ConnectorError, Flat, Flattener, Position, Sink, SinkRecord, StreamSchema,
};
use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Instant;

struct OpenFile<W: io::Write> {
    stream: Arc<StreamSchema>,
    writer: ContainerWriter<W>,
    temp: String,
    path: String,
}

pub struct LakeSink<S: LakeStore = LocalStore> {
    store: S,
    /// `envelope = "flat"`: turns change events into flat records.
    flat: Option<Flattener>,
    config: LakeConfig,
    acks: Option<AckSender>,
    manifest: Manifest,
    /// The file being written for each stream directory.
    open: HashMap<String, OpenFile<S::Writer>>,
    /// Files closed by a schema change, committed with the next commit.
    closed: Vec<OpenFile<S::Writer>>,
    files_this_commit: u32,
    /// Highest sequence number written since the last commit.
    pending_seq: Option<u64>,
    last_written: Option<Position>,
    first_pending_at: Option<Instant>,
    last_commit_at: Instant,
}

fn lake_io(what: &str, err: io::Error) -> ConnectorError {
    ConnectorError::definite(format!(
        "lake: {what} failed ({err}); check free space and permissions of the sink path. Nothing is lost: the next start resumes from the last commit"
    ))
    .caused_by(err)
}

/// The directory of a stream's files: its name (`server.namespace.table`) with the bytes a
/// path component cannot hold percent-encoded. MariaDB and PostgreSQL both allow `/` in table
/// names, and a table named `../../x` must not write outside the lake.
pub fn stream_dir(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' | '\\' | '%' => out.push_str(&format!("%{:02X}", c as u32)),
            c if c.is_control() => {
                let mut bytes = [0u8; 4];
                for byte in c.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("%{byte:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

impl LakeSink<LocalStore> {
    pub fn new(config: LakeConfig) -> Result<Self, ConnectorError> {
        config.validate().map_err(ConnectorError::definite)?;
        let store =
            LocalStore::new(&config.path).map_err(|e| lake_io("creating the lake directory", e))?;
        Ok(LakeSink::with_store(store, config))
    }
}

impl<S: LakeStore> LakeSink<S> {
    pub fn with_store(store: S, config: LakeConfig) -> Self {
        LakeSink {
            store,
            // validated with the config (`LakeSink::new`)
            flat: config.flattener().ok().flatten(),
            config,
            acks: None,
            manifest: Manifest {
                version: MANIFEST_VERSION,
                commit: 0,
                position: None,
                files: Vec::new(),
                committed_at_ms: 0,
                total_records: 0,
            },
            open: HashMap::new(),
            closed: Vec::new(),
            files_this_commit: 0,
            pending_seq: None,
            last_written: None,
            first_pending_at: None,
            last_commit_at: Instant::now(),
        }
    }

    /// Finishes what the last commit started and discards what no commit covers.
    fn recover(&mut self) -> Result<(), ConnectorError> {
        if let Some(bytes) = self
            .store
            .get(MANIFEST_PATH)
            .map_err(|e| lake_io("reading the manifest", e))?
        {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|err| {
                ConnectorError::definite(format!(
                    "lake manifest {MANIFEST_PATH} under {} is unreadable ({err}); restore it from a backup or point sink.path at a new directory",
                    self.config.path.display()
                ))
            })?;
            if manifest.version != MANIFEST_VERSION {
                return Err(ConnectorError::definite(format!(
                    "lake manifest version {} is not supported by this Headwater (expects {MANIFEST_VERSION}); use the Headwater release that wrote it",
                    manifest.version
                )));
            }
            self.manifest = manifest;
        }
        for file in &self.manifest.files {
            let published = self
                .store
                .exists(&file.path)
                .map_err(|e| lake_io("checking a committed file", e))?;
            if published {
                continue;
            }
            if self
                .store
                .exists(&file.temp)
                .map_err(|e| lake_io("checking a committed file", e))?
            {
                tracing::info!(file = %file.path, "lake: finishing the publication of a committed file");
                self.store
                    .publish(&file.temp, &file.path)
                    .map_err(|e| lake_io("publishing a committed file", e))?;
            } else {
                return Err(ConnectorError::definite(format!(
                    "lake: committed file {} is missing (neither it nor its temporary file {} exists); the lake was changed by hand — restore the file or start a new lake",
                    file.path, file.temp
                )));
            }
        }
        let stale: Vec<String> = self
            .store
            .list()
            .map_err(|e| lake_io("listing the lake", e))?
            .into_iter()
            .filter(|p| p.ends_with(".tmp"))
            .collect();
        for path in stale {
            tracing::info!(file = %path, "lake: removing an uncommitted file left by an earlier run");
            self.store
                .remove(&path)
                .map_err(|e| lake_io("removing an uncommitted file", e))?;
        }
        Ok(())
    }

    fn file_names(&mut self, stream: &StreamSchema) -> (String, String) {
        let dir = stream_dir(&stream.default_name());
        self.files_this_commit += 1;
        let base = format!(
            "part-{:010}-{:04}-v{}.avro",
            self.manifest.commit + 1,
            self.files_this_commit,
            stream.version
        );
        (format!("{dir}/{base}"), format!("{dir}/.{base}.tmp"))
    }

    fn open_file(
        &mut self,
        stream: &Arc<StreamSchema>,
    ) -> Result<OpenFile<S::Writer>, ConnectorError> {
        let (path, temp) = self.file_names(stream);
        let out = self
            .store
            .create(&temp)
            .map_err(|e| lake_io("creating a data file", e))?;
        let sync_marker: [u8; 16] = rand::random();
        let writer =
            ContainerWriter::with_codec(out, &stream.value_schema, sync_marker, self.config.codec)
                .map_err(|e| lake_io("writing a file header", e))?;
        Ok(OpenFile {
            stream: Arc::clone(stream),
            writer,
            temp,
            path,
        })
    }

    /// Makes everything written durable and records it with `through` in the manifest.
    fn commit(&mut self, through: &Position) -> Result<(), ConnectorError> {
        let nothing_new =
            self.pending_seq.is_none() && self.manifest.position.as_ref() == Some(through);
        if nothing_new {
            return Ok(());
        }
        let mut files = Vec::new();
        let finishing: Vec<OpenFile<S::Writer>> = self
            .closed
            .drain(..)
            .chain(self.open.drain().map(|(_, f)| f))
            .collect();
        let mut records = 0;
        for file in finishing {
            let count = file.writer.records();
            let out = file
                .writer
                .finish()
                .map_err(|e| lake_io("writing a data file", e))?;
            self.store
                .sync(out)
                .map_err(|e| lake_io("syncing a data file", e))?;
            records += count;
            files.push(CommittedFile {
                path: file.path,
                temp: file.temp,
                records: count,
            });
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            commit: self.manifest.commit + 1,
            position: Some(through.clone()),
            files,
            committed_at_ms: headwater_contract::now_ms(),
            total_records: self.manifest.total_records + records,
        };
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| {
            ConnectorError::definite(format!("lake: encoding the manifest failed: {e}"))
        })?;
        self.store
            .put_atomic(MANIFEST_PATH, &bytes)
            .map_err(|e| lake_io("writing the manifest", e))?;
        // Committed: from here on a crash is finished by `recover`.
        for file in &manifest.files {
            self.store
                .publish(&file.temp, &file.path)
                .map_err(|e| lake_io("publishing a data file", e))?;
        }
        tracing::debug!(commit = manifest.commit, files = manifest.files.len(), records, position = %through, "lake commit");
        self.manifest = manifest;
        self.files_this_commit = 0;
        self.first_pending_at = None;
        self.last_commit_at = Instant::now();
        if let (Some(seq), Some(acks)) = (self.pending_seq.take(), &self.acks) {
            acks.ack(Ack::Through(seq));
        }
        Ok(())
    }

    /// The last committed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Appends one record to its stream's open file, committing a file that is full.
    fn write_record(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        let dir = stream_dir(&record.stream.default_name());
        let replace = match self.open.get(&dir) {
            Some(file) => {
                !Arc::ptr_eq(&file.stream, &record.stream)
                    && file.stream.version != record.stream.version
            }
            None => true,
        };
        if replace {
            if let Some(old) = self.open.remove(&dir) {
                self.closed.push(old);
            }
            let file = self.open_file(&record.stream)?;
            self.open.insert(dir.clone(), file);
        }
        let Some(file) = self.open.get_mut(&dir) else {
            return Err(ConnectorError::definite(
                "lake: internal error, no open file for a stream",
            ));
        };
        file.writer
            .append(&record.value)
            .map_err(|e| lake_io("writing a data file", e))?;
        let full = file.writer.len() >= self.config.max_file_bytes;
        self.pending_seq = Some(record.seq);
        self.first_pending_at.get_or_insert_with(Instant::now);
        self.last_written = Some(record.position);
        if full {
            if let Some(through) = self.last_written.clone() {
                self.commit(&through)?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<S: LakeStore + 'static> Sink for LakeSink<S> {
    async fn check(&mut self) -> Result<Vec<headwater_contract::Problem>, ConnectorError> {
        let probe = "_headwater/.check.tmp";
        let writable = self
            .store
            .create(probe)
            .and_then(|mut w| {
                std::io::Write::write_all(&mut w, b"headwater")?;
                self.store.sync(w)
            })
            .and_then(|_| self.store.remove(probe));
        Ok(match writable {
            Ok(()) => Vec::new(),
            Err(err) => vec![headwater_contract::Problem::error(
                format!(
                    "the lake at {} is not writable ({err})",
                    self.config.path.display()
                ),
                "point sink.path at a directory this user can create and write",
            )],
        })
    }

    async fn open(&mut self, acks: AckSender) -> Result<Option<Position>, ConnectorError> {
        self.recover()?;
        self.acks = Some(acks);
        Ok(self.manifest.position.clone())
    }

    async fn write(&mut self, record: SinkRecord) -> Result<(), ConnectorError> {
        let record = match self.flat.as_mut() {
            None => record,
            Some(flat) => match flat.apply(record)? {
                Flat::Record(record) => record,
                // a file holds no tombstones (the config refuses them): nothing is written,
                // and the record is acknowledged with the next commit
                Flat::Tombstone(record) | Flat::Dropped(record) => {
                    self.pending_seq = Some(record.seq);
                    self.first_pending_at.get_or_insert_with(Instant::now);
                    self.last_written = Some(record.position);
                    return Ok(());
                }
            },
        };
        self.write_record(record)
    }

    async fn tick(&mut self, through: Option<&Position>) -> Result<(), ConnectorError> {
        let Some(through) = through else {
            return Ok(());
        };
        let due = match self.first_pending_at {
            Some(since) => since.elapsed() >= self.config.commit_interval,
            // Nothing pending: record progress over filtered or quiet log now and then, so a
            // restart does not re-read it.
            None => self.last_commit_at.elapsed() >= self.config.commit_interval,
        };
        if due {
            self.commit(through)?;
        }
        Ok(())
    }

    async fn flush(&mut self, through: &Position) -> Result<(), ConnectorError> {
        self.commit(through)
    }
}

/// The position committed in the lake at `path`, read without opening the sink (for
/// `headwater offsets` while a pipeline runs).
pub fn committed_position(path: &std::path::Path) -> Result<Option<Position>, ConnectorError> {
    let store = LocalStore::new(path).map_err(|e| lake_io("opening the lake", e))?;
    match store
        .get(MANIFEST_PATH)
        .map_err(|e| lake_io("reading the manifest", e))?
    {
        None => Ok(None),
        Some(bytes) => {
            let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|err| {
                ConnectorError::definite(format!(
                    "lake manifest under {} is unreadable: {err}",
                    path.display()
                ))
            })?;
            Ok(manifest.position)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headwater_contract::avro::{put_long, put_str};
    use headwater_contract::{Lsn, PgPosition, TableId};
    use std::path::Path;
    use std::time::Duration;

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"long"},{"name":"s","type":"string"}]}"#;

    #[test]
    fn a_table_name_cannot_leave_the_lake() {
        assert_eq!(stream_dir("srv.shop.orders"), "srv.shop.orders");
        assert_eq!(stream_dir("srv.my db.\"ü\" 表"), "srv.my db.\"ü\" 表");
        let escaped = stream_dir("srv.db.../../../../tmp/x");
        assert_eq!(escaped, "srv.db...%2F..%2F..%2F..%2Ftmp%2Fx");
        assert_eq!(Path::new(&escaped).components().count(), 1);
        assert_eq!(stream_dir("srv.db.a\\b%\n"), "srv.db.a%5Cb%25%0A");
    }

    fn stream(version: u32) -> Arc<StreamSchema> {
        Arc::new(StreamSchema {
            kind: Default::default(),
            server_name: "srv".into(),
            table: Some(TableId {
                namespace: "db".into(),
                table: "t".into(),
            }),
            version,
            table_schema: None,
            connector: headwater_contract::ConnectorKind::Postgres,
            key_schema: None,
            value_schema: SCHEMA.to_string(),
        })
    }

    fn position(n: u64) -> Position {
        Position::Postgres(PgPosition::at(Lsn(n), 0))
    }

    fn record(seq: u64, stream: &Arc<StreamSchema>) -> SinkRecord {
        let mut value = Vec::new();
        put_long(&mut value, seq as i64);
        put_str(&mut value, "payload");
        SinkRecord {
            seq,
            stream: Arc::clone(stream),
            op: None,
            key: None,
            value,
            position: position(seq * 10),
        }
    }

    fn config(path: &Path) -> LakeConfig {
        LakeConfig {
            path: path.to_path_buf(),
            commit_interval: Duration::from_secs(3600),
            max_file_bytes: 1 << 30,
            codec: crate::ocf::Codec::default(),
            envelope: Default::default(),
            flat_fields: None,
            flat_deletes: None,
        }
    }

    fn read_all(lake: &Path) -> Vec<i64> {
        let mut files: Vec<_> = LocalStore::new(lake)
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .filter(|p| p.ends_with(".avro"))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for file in files {
            let bytes = std::fs::read(lake.join(&file)).unwrap();
            for value in apache_avro::Reader::new(&bytes[..]).unwrap() {
                match value.unwrap() {
                    apache_avro::types::Value::Record(fields) => match fields[0].1 {
                        apache_avro::types::Value::Long(n) => out.push(n),
                        ref other => panic!("{other:?}"),
                    },
                    other => panic!("{other:?}"),
                }
            }
        }
        out
    }

    async fn open(
        lake: &Path,
    ) -> (
        LakeSink,
        Option<Position>,
        tokio::sync::mpsc::UnboundedReceiver<Ack>,
    ) {
        let mut sink = LakeSink::new(config(lake)).unwrap();
        let (acks, rx) = AckSender::channel();
        let resume = sink.open(acks).await.unwrap();
        (sink, resume, rx)
    }

    #[tokio::test]
    async fn committed_records_read_back_and_are_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, resume, mut acks) = open(dir.path()).await;
        assert_eq!(resume, None);
        let s = stream(1);
        for seq in 1..=3 {
            sink.write(record(seq, &s)).await.unwrap();
        }
        assert!(
            acks.try_recv().is_err(),
            "nothing is acknowledged before the commit"
        );
        sink.flush(&position(35)).await.unwrap();
        assert_eq!(acks.try_recv().unwrap(), Ack::Through(3));
        assert_eq!(read_all(dir.path()), [1, 2, 3]);
        let (_, resume, _) = open(dir.path()).await;
        assert_eq!(resume, Some(position(35)));
    }

    #[tokio::test]
    async fn a_crash_before_the_manifest_leaves_only_the_old_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, _, _acks) = open(dir.path()).await;
        let s = stream(1);
        sink.write(record(1, &s)).await.unwrap();
        sink.flush(&position(10)).await.unwrap();
        sink.write(record(2, &s)).await.unwrap();
        // the process dies here: record 2 sits in a temporary file that no manifest names
        std::mem::forget(sink);
        let (_, resume, _) = open(dir.path()).await;
        assert_eq!(resume, Some(position(10)));
        assert_eq!(read_all(dir.path()), [1]);
        let leftovers: Vec<String> = LocalStore::new(dir.path())
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .filter(|p| p.ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "uncommitted files are removed: {leftovers:?}"
        );
    }

    /// A store whose publication (rename) fails: the process "dies" between writing the
    /// manifest and giving the files their final names.
    struct DiesBeforePublish(LocalStore);

    impl LakeStore for DiesBeforePublish {
        type Writer = <LocalStore as LakeStore>::Writer;
        fn create(&self, path: &str) -> io::Result<Self::Writer> {
            self.0.create(path)
        }
        fn sync(&self, writer: Self::Writer) -> io::Result<()> {
            self.0.sync(writer)
        }
        fn publish(&self, _: &str, _: &str) -> io::Result<()> {
            Err(io::Error::other("killed"))
        }
        fn put_atomic(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
            self.0.put_atomic(path, bytes)
        }
        fn get(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
            self.0.get(path)
        }
        fn exists(&self, path: &str) -> io::Result<bool> {
            self.0.exists(path)
        }
        fn remove(&self, path: &str) -> io::Result<()> {
            self.0.remove(path)
        }
        fn list(&self) -> io::Result<Vec<String>> {
            self.0.list()
        }
    }

    #[tokio::test]
    async fn a_crash_after_the_manifest_is_finished_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = LakeSink::with_store(
            DiesBeforePublish(LocalStore::new(dir.path()).unwrap()),
            config(dir.path()),
        );
        let (acks, mut rx) = AckSender::channel();
        sink.open(acks).await.unwrap();
        let s = stream(1);
        sink.write(record(1, &s)).await.unwrap();
        sink.write(record(2, &s)).await.unwrap();
        assert!(sink.flush(&position(20)).await.is_err());
        assert!(
            rx.try_recv().is_err(),
            "a failed commit acknowledges nothing"
        );
        assert!(
            read_all(dir.path()).is_empty(),
            "no file is visible before publication"
        );
        let (_, resume, _) = open(dir.path()).await;
        assert_eq!(
            resume,
            Some(position(20)),
            "the manifest was written: the commit stands"
        );
        assert_eq!(
            read_all(dir.path()),
            [1, 2],
            "recovery publishes the committed files"
        );
    }

    #[tokio::test]
    async fn a_schema_change_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut sink, _, _acks) = open(dir.path()).await;
        sink.write(record(1, &stream(1))).await.unwrap();
        sink.write(record(2, &stream(2))).await.unwrap();
        sink.flush(&position(20)).await.unwrap();
        let files: Vec<String> = LocalStore::new(dir.path())
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .filter(|p| p.ends_with(".avro"))
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files[0].ends_with("-v1.avro") && files[1].ends_with("-v2.avro"),
            "{files:?}"
        );
        assert_eq!(read_all(dir.path()), [1, 2]);
    }

    #[tokio::test]
    async fn a_full_file_is_committed_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = LakeSink::new(LakeConfig {
            max_file_bytes: 4096,
            ..config(dir.path())
        })
        .unwrap();
        let (acks, mut rx) = AckSender::channel();
        sink.open(acks).await.unwrap();
        let s = stream(1);
        let mut seq = 0;
        while rx.try_recv().is_err() {
            seq += 1;
            assert!(seq < 10_000, "the size limit never triggered a commit");
            sink.write(record(seq, &s)).await.unwrap();
        }
        assert!(read_all(dir.path()).len() as u64 == seq);
    }
}
