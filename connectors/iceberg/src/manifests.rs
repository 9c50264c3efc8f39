//! A snapshot's files: read from its manifest list and manifests, and written as a new
//! manifest and manifest list. The spec writers of the `iceberg` crate encode them (into
//! memory: the warehouse's store writes the bytes), so their Avro schemas, field ids and
//! partition summaries are the specification's.

use crate::store::Warehouse;
use crate::writer::WrittenFile;
use headwater_contract::ConnectorError;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, FormatVersion, Literal, Manifest,
    ManifestFile, ManifestList, ManifestListWriter, ManifestWriterBuilder, PartitionSpecRef,
    SchemaRef, Snapshot, Struct,
};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::HashSet;

/// A data file of a snapshot, with what a later manifest must repeat of its entry.
#[derive(Clone, Debug)]
pub struct LiveEntry {
    pub data_file: DataFile,
    pub snapshot_id: i64,
    pub sequence_number: i64,
}

pub fn iceberg_error(what: &str, err: iceberg::Error) -> ConnectorError {
    ConnectorError::definite(format!(
        "iceberg: {what} failed ({err}); the table's metadata is not what Headwater writes — point the sink at a new warehouse and catalog"
    ))
    .caused_by(err)
}

async fn read(warehouse: &Warehouse, uri: &str) -> Result<bytes::Bytes, ConnectorError> {
    let path = warehouse.path_of(uri)?;
    let what = format!("iceberg: reading {uri}");
    let found = warehouse
        .store
        .get(&path)
        .await
        .map_err(|e| headwater_lakehouse::error::lake_error(&what, e))?;
    found
        .bytes()
        .await
        .map_err(|e| headwater_lakehouse::error::lake_error(&what, e))
}

/// The manifests of `snapshot`.
pub async fn manifest_files(
    warehouse: &Warehouse,
    snapshot: &Snapshot,
) -> Result<Vec<ManifestFile>, ConnectorError> {
    let bytes = read(warehouse, snapshot.manifest_list()).await?;
    let list = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
        .map_err(|e| iceberg_error(&format!("reading {}", snapshot.manifest_list()), e))?;
    Ok(list.entries().to_vec())
}

/// The live data files of `snapshot` (added or existing in its manifests).
pub async fn live_entries(
    warehouse: &Warehouse,
    snapshot: &Snapshot,
) -> Result<Vec<LiveEntry>, ConnectorError> {
    let mut live = Vec::new();
    for manifest in manifest_files(warehouse, snapshot).await? {
        let bytes = read(warehouse, &manifest.manifest_path).await?;
        let parsed = Manifest::parse_avro(&bytes)
            .map_err(|e| iceberg_error(&format!("reading {}", manifest.manifest_path), e))?;
        for entry in parsed.entries() {
            if !entry.is_alive() || entry.content_type() != DataContentType::Data {
                continue;
            }
            live.push(LiveEntry {
                data_file: entry.data_file().clone(),
                snapshot_id: entry.snapshot_id().unwrap_or(snapshot.snapshot_id()),
                sequence_number: entry
                    .sequence_number()
                    .unwrap_or(snapshot.sequence_number()),
            });
        }
    }
    Ok(live)
}

/// The `data_file` of a written file.
pub fn data_file(
    warehouse: &Warehouse,
    file: WrittenFile,
    spec: &PartitionSpecRef,
) -> Result<DataFile, ConnectorError> {
    let partition = match file.day {
        Some(day) if !spec.fields().is_empty() => Struct::from_iter([Some(Literal::date(day))]),
        None if !spec.fields().is_empty() => Struct::from_iter([None]),
        _ => Struct::empty(),
    };
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(warehouse.uri(&file.path))
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(spec.spec_id())
        .record_count(file.rows)
        .file_size_in_bytes(file.size)
        .value_counts(file.value_counts)
        .null_value_counts(file.null_counts)
        .column_sizes(file.column_sizes)
        .lower_bounds(file.lower_bounds)
        .upper_bounds(file.upper_bounds)
        .build()
        .map_err(|e| {
            ConnectorError::definite(format!("iceberg: describing {} failed ({e})", file.path))
        })
}

/// What one snapshot holds: the files kept, removed and added.
pub struct SnapshotFiles<'a> {
    pub live: &'a [LiveEntry],
    pub removed: &'a HashSet<String>,
    pub added: Vec<DataFile>,
}

/// Writes the manifest (one per snapshot: every live file, so a snapshot reads one manifest)
/// and the manifest list of snapshot `snapshot_id`; returns the list's URI.
pub async fn write_snapshot_files(
    warehouse: &Warehouse,
    metadata_dir: &str,
    (snapshot_id, parent, sequence_number): (i64, Option<i64>, i64),
    schema: SchemaRef,
    spec: PartitionSpecRef,
    files: SnapshotFiles<'_>,
) -> Result<String, ConnectorError> {
    let memory = FileIO::new_with_memory();
    let id = uuid::Uuid::new_v4();
    let manifest_path = Path::from(format!("{metadata_dir}/{id}-m0.avro"));
    let manifest_uri = warehouse.uri(&manifest_path);
    let what = |e| iceberg_error("writing a manifest", e);
    let output = memory.new_output(&manifest_uri).map_err(what)?;
    let mut writer =
        ManifestWriterBuilder::new(output, Some(snapshot_id), schema, spec.as_ref().clone())
            .build_v2_data();
    let mut entries = 0;
    for entry in files.live {
        let gone = files.removed.contains(entry.data_file.file_path());
        let (data, seq) = (entry.data_file.clone(), entry.sequence_number);
        if gone {
            writer.add_delete_file(data, seq, Some(seq)).map_err(what)?;
        } else {
            writer
                .add_existing_file(data, entry.snapshot_id, seq, Some(seq))
                .map_err(what)?;
        }
        entries += 1;
    }
    for data in files.added {
        writer.add_file(data, sequence_number).map_err(what)?;
        entries += 1;
    }
    let mut manifests = Vec::new();
    if entries > 0 {
        let manifest = writer.write_manifest_file().await.map_err(what)?;
        copy_out(warehouse, &memory, &manifest_uri, &manifest_path).await?;
        manifests.push(manifest);
    }
    let list_path = Path::from(format!("{metadata_dir}/snap-{snapshot_id}-{id}.avro"));
    let list_uri = warehouse.uri(&list_path);
    let what = |e| iceberg_error("writing a manifest list", e);
    let output = memory
        .new_output(&list_uri)
        .map_err(what)?
        .writer()
        .await
        .map_err(what)?;
    let mut list = ManifestListWriter::v2(output, snapshot_id, parent, sequence_number);
    list.add_manifests(manifests.into_iter()).map_err(what)?;
    list.close().await.map_err(what)?;
    copy_out(warehouse, &memory, &list_uri, &list_path).await?;
    Ok(list_uri)
}

/// Puts the file encoded into `memory` at `uri` into the warehouse at `path`.
async fn copy_out(
    warehouse: &Warehouse,
    memory: &FileIO,
    uri: &str,
    path: &Path,
) -> Result<(), ConnectorError> {
    let bytes = memory
        .new_input(uri)
        .map_err(|e| iceberg_error("reading an encoded manifest", e))?
        .read()
        .await
        .map_err(|e| iceberg_error("reading an encoded manifest", e))?;
    warehouse.store.put(path, bytes.into()).await.map_err(|e| {
        headwater_lakehouse::error::lake_error(&format!("iceberg: writing {uri}"), e)
    })?;
    Ok(())
}
