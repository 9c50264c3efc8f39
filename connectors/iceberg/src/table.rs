//! One Iceberg table the sink writes: created on first use in the catalog, evolved when its
//! source table changes, and committed as snapshots whose summary carries the sink's round and
//! the source position the snapshot covers, so the table itself says how far it holds the
//! source's changes. Every commit is a new metadata file swapped in by the catalog.

use crate::catalog::Catalog;
use crate::manifests::{self, iceberg_error, LiveEntry, SnapshotFiles};
use crate::schema;
use crate::store::Warehouse;
use crate::writer::{IcebergFileWriter, WrittenFile};
use arrow::datatypes::{Field, SchemaRef};
use headwater_contract::{ConnectorError, Position};
use headwater_lakehouse::error::lake_error;
use headwater_lakehouse::files::ParquetSettings;
use headwater_lakehouse::{FileBatches, LiveFile, Operation, TableCommit, TableTarget};
use iceberg::spec::{
    FormatVersion, Operation as SnapshotOperation, PrimitiveLiteral, Snapshot, SortOrder, Summary,
    TableMetadata, TableMetadataBuilder, Transform, UnboundPartitionSpec,
};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The snapshot summary key holding the source position a snapshot covers.
pub const POSITION_KEY: &str = "headwater.position";
/// The snapshot summary key holding the sink's commit round.
pub const ROUND_KEY: &str = "headwater.round";

pub type IcebergFile = LiveFile<Arc<LiveEntry>>;

pub struct IcebergTarget {
    pub(crate) label: String,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) warehouse: Arc<Warehouse>,
    /// The table's directory in the warehouse.
    pub(crate) dir: String,
    pub(crate) metadata: TableMetadata,
    pub(crate) metadata_location: String,
    pub(crate) arrow: SchemaRef,
    pub(crate) round: i64,
    pub(crate) committed: Option<Position>,
    pub(crate) parquet: ParquetSettings,
    pub(crate) target_size: u64,
    /// The live files of the current snapshot, once read (by snapshot id).
    pub(crate) live: Option<(i64, Arc<Vec<Arc<LiveEntry>>>)>,
}

/// Where a new table is and what it is made of.
pub struct NewTable<'a> {
    pub label: String,
    pub namespace: String,
    pub name: String,
    pub dir: String,
    pub fields: &'a [Field],
    pub partition_column: Option<&'a str>,
    pub key_columns: &'a [String],
}

fn metadata_version(location: &str) -> u64 {
    let file = location.rsplit('/').next().unwrap_or_default();
    file.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl IcebergTarget {
    /// Opens the table, creating (and registering) it when the catalog has none.
    pub async fn open_or_create(
        catalog: Arc<Catalog>,
        warehouse: Arc<Warehouse>,
        table: NewTable<'_>,
        parquet: ParquetSettings,
        target_size: u64,
    ) -> Result<Self, ConnectorError> {
        let location = match catalog
            .metadata_location(&table.namespace, &table.name)
            .await?
        {
            Some(location) => location,
            None => create(&catalog, &warehouse, &table).await?,
        };
        let metadata = read_metadata(&warehouse, &location).await?;
        let arrow = Arc::new(schema::to_arrow(metadata.current_schema())?);
        let mut target = IcebergTarget {
            label: table.label,
            namespace: table.namespace,
            name: table.name,
            catalog,
            warehouse,
            dir: table.dir,
            metadata,
            metadata_location: location,
            arrow,
            round: 0,
            committed: None,
            parquet,
            target_size,
            live: None,
        };
        target.read_progress()?;
        Ok(target)
    }

    /// The round and position of the last snapshot this sink made.
    fn read_progress(&mut self) -> Result<(), ConnectorError> {
        let mut snapshot = self.metadata.current_snapshot().cloned();
        while let Some(current) = snapshot {
            let summary = &current.summary().additional_properties;
            if let Some(round) = summary.get(ROUND_KEY) {
                self.round = round.parse().map_err(|e| self.unreadable(ROUND_KEY, e))?;
                if let Some(position) = summary.get(POSITION_KEY) {
                    let position: Position = serde_json::from_str(position)
                        .map_err(|e| self.unreadable(POSITION_KEY, e))?;
                    self.committed = Some(position);
                }
                return Ok(());
            }
            snapshot = current
                .parent_snapshot_id()
                .and_then(|id| self.metadata.snapshot_by_id(id).cloned());
        }
        Ok(())
    }

    fn unreadable(&self, key: &str, e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::definite(format!(
            "{}: the {key} of its last snapshot is unreadable ({e}); the table was written by another program — point the sink at a new warehouse and catalog",
            self.label
        ))
    }

    fn metadata_dir(&self) -> String {
        format!("{}/metadata", self.dir)
    }

    /// Writes `metadata` as the table's next metadata file and swaps it in.
    pub(crate) async fn publish(&mut self, metadata: TableMetadata) -> Result<(), ConnectorError> {
        let version = metadata_version(&self.metadata_location) + 1;
        let path = Path::from(format!(
            "{}/{version:05}-{}.metadata.json",
            self.metadata_dir(),
            uuid::Uuid::new_v4()
        ));
        write_metadata(&self.warehouse, &path, &metadata).await?;
        let location = self.warehouse.uri(&path);
        let swapped = self
            .catalog
            .swap(
                &self.namespace,
                &self.name,
                &self.metadata_location,
                &location,
            )
            .await?;
        if !swapped {
            return Err(ConnectorError::retryable(format!(
                "iceberg: {} was committed by another writer since Headwater read it; starting again from the tables (if another program writes these tables, give Headwater a catalog of its own)",
                self.label
            )));
        }
        self.arrow = Arc::new(schema::to_arrow(metadata.current_schema())?);
        self.metadata = metadata;
        self.metadata_location = location;
        Ok(())
    }

    /// The live files of the current snapshot.
    pub(crate) async fn live_entries(
        &mut self,
    ) -> Result<Arc<Vec<Arc<LiveEntry>>>, ConnectorError> {
        let Some(snapshot) = self.metadata.current_snapshot().cloned() else {
            return Ok(Arc::new(Vec::new()));
        };
        if let Some((id, live)) = &self.live {
            if *id == snapshot.snapshot_id() {
                return Ok(Arc::clone(live));
            }
        }
        let live: Vec<Arc<LiveEntry>> = manifests::live_entries(&self.warehouse, &snapshot)
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
        let live = Arc::new(live);
        self.live = Some((snapshot.snapshot_id(), Arc::clone(&live)));
        Ok(live)
    }

    pub fn metadata_location(&self) -> &str {
        &self.metadata_location
    }
}

async fn read_metadata(
    warehouse: &Warehouse,
    location: &str,
) -> Result<TableMetadata, ConnectorError> {
    let path = warehouse.path_of(location)?;
    let what = format!("iceberg: reading the table metadata {location}");
    let bytes = warehouse
        .store
        .get(&path)
        .await
        .map_err(|e| lake_error(&what, e))?
        .bytes()
        .await
        .map_err(|e| lake_error(&what, e))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ConnectorError::definite(format!(
            "{what} failed: it is not Iceberg table metadata ({e}); point the sink at a new warehouse and catalog"
        ))
    })
}

async fn write_metadata(
    warehouse: &Warehouse,
    path: &Path,
    metadata: &TableMetadata,
) -> Result<(), ConnectorError> {
    let bytes = serde_json::to_vec(metadata).map_err(|e| {
        ConnectorError::definite(format!("iceberg: encoding the table metadata failed ({e})"))
    })?;
    warehouse
        .store
        .put(path, bytes.into())
        .await
        .map_err(|e| lake_error(&format!("iceberg: writing {}", warehouse.uri(path)), e))?;
    Ok(())
}

/// Creates the table's first metadata file and registers it; the location the catalog holds
/// (another writer's, if it registered the table first).
async fn create(
    catalog: &Catalog,
    warehouse: &Warehouse,
    table: &NewTable<'_>,
) -> Result<String, ConnectorError> {
    let what = |e| iceberg_error(&format!("creating {}", table.label), e);
    let Some(schema) = schema::evolve(None, table.fields, table.key_columns)? else {
        return Err(ConnectorError::definite(format!(
            "iceberg: {} has no columns to create it with; this is a bug in Headwater",
            table.label
        )));
    };
    let mut spec = UnboundPartitionSpec::builder();
    if let Some(column) = table.partition_column {
        let source = schema.field_by_name(column).map(|f| f.id).ok_or_else(|| {
            ConnectorError::definite(format!(
                "iceberg: {} has no column {column} to partition by",
                table.label
            ))
        })?;
        spec = spec
            .add_partition_field(source, column, Transform::Identity)
            .map_err(what)?;
    }
    let location = warehouse.uri(&Path::from(table.dir.as_str()));
    let properties = HashMap::from([
        ("write.format.default".to_string(), "parquet".to_string()),
        (
            "write.parquet.compression-codec".to_string(),
            "zstd".to_string(),
        ),
    ]);
    let metadata = TableMetadataBuilder::new(
        schema,
        spec.build(),
        SortOrder::unsorted_order(),
        location,
        FormatVersion::V2,
        properties,
    )
    .and_then(TableMetadataBuilder::build)
    .map_err(what)?
    .metadata;
    let path = Path::from(format!(
        "{}/metadata/00000-{}.metadata.json",
        table.dir,
        uuid::Uuid::new_v4()
    ));
    write_metadata(warehouse, &path, &metadata).await?;
    let uri = warehouse.uri(&path);
    if catalog.create(&table.namespace, &table.name, &uri).await? {
        tracing::info!(table = %table.label, location = %uri, "iceberg: created the table");
        return Ok(uri);
    }
    // registered meanwhile by another writer: take what the catalog holds
    catalog
        .metadata_location(&table.namespace, &table.name)
        .await?
        .ok_or_else(|| {
            ConnectorError::retryable(format!(
                "iceberg: {} was registered and dropped meanwhile; retrying",
                table.label
            ))
        })
}

fn bound(value: Option<&iceberg::spec::Datum>) -> Option<serde_json::Value> {
    match value?.literal() {
        PrimitiveLiteral::Int(v) => Some((*v).into()),
        PrimitiveLiteral::Long(v) => Some((*v).into()),
        _ => None,
    }
}

impl TableTarget for IcebergTarget {
    type Handle = Arc<LiveEntry>;
    type Written = WrittenFile;
    type Writer = IcebergFileWriter;

    fn label(&self) -> &str {
        &self.label
    }

    fn round(&self) -> i64 {
        self.round
    }

    fn committed(&self) -> Option<&Position> {
        self.committed.as_ref()
    }

    fn version(&self) -> Option<u64> {
        u64::try_from(self.metadata.last_sequence_number()).ok()
    }

    fn arrow_schema(&self) -> Result<SchemaRef, ConnectorError> {
        Ok(Arc::clone(&self.arrow))
    }

    async fn add_columns(&mut self, fields: &[Field]) -> Result<(), ConnectorError> {
        let current = Arc::clone(self.metadata.current_schema());
        let Some(evolved) = schema::evolve(Some(&current), fields, &[])? else {
            return Ok(());
        };
        let added: Vec<String> = fields
            .iter()
            .filter(|f| current.field_by_name(f.name()).is_none())
            .map(|f| f.name().clone())
            .collect();
        let metadata = TableMetadataBuilder::new_from_metadata(
            self.metadata.clone(),
            Some(self.metadata_location.clone()),
        )
        .add_current_schema(evolved)
        .and_then(TableMetadataBuilder::build)
        .map_err(|e| iceberg_error(&format!("adding columns to {}", self.label), e))?
        .metadata;
        self.publish(metadata).await?;
        tracing::info!(table = %self.label, columns = ?added, "iceberg: added columns");
        Ok(())
    }

    fn file_writer(&self) -> Result<IcebergFileWriter, ConnectorError> {
        let spec = self.metadata.default_partition_spec();
        let day_column = spec.fields().first().and_then(|field| {
            let name = self
                .metadata
                .current_schema()
                .field_by_id(field.source_id)?
                .name
                .clone();
            self.arrow.index_of(&name).ok()
        });
        let types = self
            .metadata
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.id, (*f.field_type).clone()))
            .collect();
        Ok(IcebergFileWriter {
            store: Arc::clone(&self.warehouse.store),
            dir: format!("{}/data", self.dir),
            schema: Arc::clone(&self.arrow),
            properties: self.parquet.for_schema(&self.arrow),
            target_size: self.target_size,
            day_column,
            types,
            what: format!(
                "iceberg: writing Parquet files of {} into {}",
                self.label, self.warehouse.base
            ),
            open: Default::default(),
            done: Vec::new(),
        })
    }

    async fn live_files(
        &self,
        stats_column: Option<&str>,
    ) -> Result<Vec<IcebergFile>, ConnectorError> {
        // `&self`: the cache is filled by commits; a first call reads the manifests
        let entries = match (&self.live, self.metadata.current_snapshot()) {
            (_, None) => Arc::new(Vec::new()),
            (Some((id, live)), Some(s)) if *id == s.snapshot_id() => Arc::clone(live),
            (_, Some(snapshot)) => Arc::new(
                manifests::live_entries(&self.warehouse, snapshot)
                    .await?
                    .into_iter()
                    .map(Arc::new)
                    .collect(),
            ),
        };
        let stats_id = stats_column
            .and_then(|c| self.metadata.current_schema().field_by_name(c))
            .map(|f| f.id);
        let spec = self.metadata.default_partition_spec();
        let mut files = Vec::with_capacity(entries.len());
        for entry in entries.iter() {
            let data = &entry.data_file;
            let mut partition = HashMap::new();
            for (field, value) in spec.fields().iter().zip(data.partition().iter()) {
                partition.insert(field.name.clone(), value.map(|v| format!("{v:?}")));
            }
            files.push(LiveFile {
                path: self.warehouse.path_of(data.file_path())?.to_string(),
                size: i64::try_from(data.file_size_in_bytes()).unwrap_or(i64::MAX),
                rows: usize::try_from(data.record_count()).ok(),
                partition,
                min: stats_id.and_then(|id| bound(data.lower_bounds().get(&id))),
                max: stats_id.and_then(|id| bound(data.upper_bounds().get(&id))),
                handle: Arc::clone(entry),
            });
        }
        Ok(files)
    }

    async fn read_batches(
        &self,
        file: &IcebergFile,
        only: Option<&[String]>,
    ) -> Result<FileBatches, ConnectorError> {
        let what = format!("iceberg: reading {} of {}", file.path, self.label);
        let size = u64::try_from(file.size).map_err(|e| lake_error(&what, e))?;
        headwater_lakehouse::files::read_batches(
            Arc::clone(&self.warehouse.store),
            Path::from(file.path.as_str()),
            size,
            only,
            &what,
        )
        .await
    }

    async fn commit(&mut self, commit: TableCommit<Self>) -> Result<(), ConnectorError> {
        crate::commit::commit(self, commit).await
    }

    async fn vacuum(&mut self, retention: Duration) -> Result<usize, ConnectorError> {
        crate::vacuum::vacuum(self, retention).await
    }
}

impl IcebergTarget {
    /// The snapshot that records `commit` (its files written), as the table's next metadata.
    pub(crate) async fn snapshot_for(
        &mut self,
        commit: TableCommit<Self>,
    ) -> Result<(TableMetadata, Arc<Vec<Arc<LiveEntry>>>), ConnectorError> {
        let live = self.live_entries().await?;
        let removed: HashSet<String> = commit
            .removed
            .iter()
            .map(|f| f.handle.data_file.file_path().to_string())
            .collect();
        let spec = Arc::clone(self.metadata.default_partition_spec());
        let schema = Arc::clone(self.metadata.current_schema());
        let added_files = commit.added.len();
        let added_rows: u64 = commit.added.iter().map(|f| f.rows).sum();
        let added = commit
            .added
            .into_iter()
            .map(|file| manifests::data_file(&self.warehouse, file, &spec))
            .collect::<Result<Vec<_>, _>>()?;
        let snapshot_id = loop {
            let id = (uuid::Uuid::new_v4().as_u64_pair().0 >> 1) as i64;
            if id != 0 && self.metadata.snapshot_by_id(id).is_none() {
                break id;
            }
        };
        let parent = self.metadata.current_snapshot_id();
        let sequence_number = self.metadata.next_sequence_number();
        let live_entries: Vec<LiveEntry> = live.iter().map(|e| (**e).clone()).collect();
        let new_files = added.clone();
        let list = manifests::write_snapshot_files(
            &self.warehouse,
            &self.metadata_dir(),
            (snapshot_id, parent, sequence_number),
            Arc::clone(&schema),
            spec,
            SnapshotFiles {
                live: &live_entries,
                removed: &removed,
                added,
            },
        )
        .await?;
        let operation = match commit.operation {
            Operation::Append => SnapshotOperation::Append,
            Operation::Merge { .. } if removed.is_empty() => SnapshotOperation::Append,
            Operation::Merge { .. } => SnapshotOperation::Overwrite,
            Operation::Compact { .. } => SnapshotOperation::Replace,
        };
        let mut properties = HashMap::from([
            (ROUND_KEY.to_string(), commit.round.to_string()),
            ("added-data-files".to_string(), added_files.to_string()),
            ("added-records".to_string(), added_rows.to_string()),
            ("deleted-data-files".to_string(), removed.len().to_string()),
        ]);
        if let Some(position) = &commit.position {
            let text = serde_json::to_string(position).map_err(|e| {
                ConnectorError::definite(format!("iceberg: encoding a position failed ({e})"))
            })?;
            properties.insert(POSITION_KEY.to_string(), text);
        }
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence_number)
            .with_timestamp_ms(headwater_contract::now_ms())
            .with_manifest_list(list)
            .with_summary(Summary {
                operation,
                additional_properties: properties,
            })
            .with_schema_id(schema.schema_id())
            .build();
        let metadata = TableMetadataBuilder::new_from_metadata(
            self.metadata.clone(),
            Some(self.metadata_location.clone()),
        )
        .set_branch_snapshot(snapshot, "main")
        .and_then(TableMetadataBuilder::build)
        .map_err(|e| iceberg_error(&format!("committing to {}", self.label), e))?
        .metadata;
        let mut next: Vec<Arc<LiveEntry>> = live
            .iter()
            .filter(|e| !removed.contains(e.data_file.file_path()))
            .cloned()
            .collect();
        next.extend(new_files.into_iter().map(|data_file| {
            Arc::new(LiveEntry {
                data_file,
                snapshot_id,
                sequence_number,
            })
        }));
        Ok((metadata, Arc::new(next)))
    }
}
