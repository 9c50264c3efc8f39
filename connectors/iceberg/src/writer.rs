//! Parquet data files of one commit, written straight into the warehouse: one open file per
//! partition (a changelog's day), cut at the target size. Each file's Iceberg metrics (rows,
//! size, per-column value and null counts, integer bounds) come from the footer the Parquet
//! writer returns, so nothing is read back.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Date32Type, SchemaRef};
use headwater_contract::ConnectorError;
use headwater_lakehouse::error::lake_error;
use iceberg::spec::{Datum, PrimitiveType, Type};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::Statistics;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A data file written and not yet committed.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub path: Path,
    pub size: u64,
    pub rows: u64,
    /// The day (since 1970-01-01) of a changelog file's partition.
    pub day: Option<i32>,
    pub value_counts: HashMap<i32, u64>,
    pub null_counts: HashMap<i32, u64>,
    pub column_sizes: HashMap<i32, u64>,
    pub lower_bounds: HashMap<i32, Datum>,
    pub upper_bounds: HashMap<i32, Datum>,
}

pub(crate) struct OpenFile {
    writer: AsyncArrowWriter<BufWriter>,
    path: Path,
    day: Option<i32>,
}

pub struct IcebergFileWriter {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// The table's `data` directory.
    pub(crate) dir: String,
    pub(crate) schema: SchemaRef,
    pub(crate) properties: WriterProperties,
    pub(crate) target_size: u64,
    /// The index of the day partition column, for a partitioned changelog.
    pub(crate) day_column: Option<usize>,
    /// The Iceberg type of each top-level field id (bounds are kept for integers).
    pub(crate) types: HashMap<i32, Type>,
    pub(crate) what: String,
    pub(crate) open: BTreeMap<Option<i32>, OpenFile>,
    pub(crate) done: Vec<WrittenFile>,
}

impl IcebergFileWriter {
    async fn write_part(
        &mut self,
        day: Option<i32>,
        part: RecordBatch,
    ) -> Result<(), ConnectorError> {
        if !self.open.contains_key(&day) {
            let partition = day.map_or(String::new(), |d| {
                format!(
                    "{}={}/",
                    headwater_lakehouse::changelog::COMMIT_DATE,
                    day_text(d)
                )
            });
            let path = Path::from(format!(
                "{}/{partition}{}.parquet",
                self.dir,
                uuid::Uuid::new_v4()
            ));
            let output = BufWriter::new(Arc::clone(&self.store), path.clone());
            let writer = AsyncArrowWriter::try_new(
                output,
                Arc::clone(&self.schema),
                Some(self.properties.clone()),
            )
            .map_err(|e| lake_error(&self.what, e))?;
            self.open.insert(day, OpenFile { writer, path, day });
        }
        let Some(file) = self.open.get_mut(&day) else {
            return Err(ConnectorError::definite(
                "iceberg: internal error, no open file",
            ));
        };
        file.writer
            .write(&part)
            .await
            .map_err(|e| lake_error(&self.what, e))?;
        let size = file.writer.bytes_written() + file.writer.in_progress_size();
        if size as u64 >= self.target_size {
            if let Some(file) = self.open.remove(&day) {
                let written = close(Arc::clone(&self.store), file, &self.types, &self.what).await?;
                self.done.push(written);
            }
        }
        Ok(())
    }
}

/// Finishes `file` (its footer) and gathers its metrics. A function of its own: the writer
/// (which is not `Sync`) is not borrowed across the awaits.
async fn close(
    store: Arc<dyn ObjectStore>,
    file: OpenFile,
    types: &HashMap<i32, Type>,
    what: &str,
) -> Result<WrittenFile, ConnectorError> {
    let metadata = file.writer.close().await.map_err(|e| lake_error(what, e))?;
    let size = store
        .head(&file.path)
        .await
        .map_err(|e| lake_error(what, e))?
        .size;
    Ok(metrics(&metadata, file.path, size, file.day, types))
}

impl headwater_lakehouse::FileWriter for IcebergFileWriter {
    type Written = WrittenFile;

    async fn write(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let Some(index) = self.day_column else {
            return self.write_part(None, batch).await;
        };
        let days = batch.column(index).as_primitive::<Date32Type>();
        let first = days.is_valid(0).then(|| days.value(0));
        let same = (0..days.len()).all(|row| days.is_valid(row).then(|| days.value(row)) == first);
        if same {
            // the usual round: one day
            return self.write_part(first, batch).await;
        }
        let mut distinct: Vec<Option<i32>> = days.iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        for day in distinct {
            let keep: arrow::array::BooleanArray = days.iter().map(|d| Some(d == day)).collect();
            let part = filter_record_batch(&batch, &keep).map_err(|e| lake_error(&self.what, e))?;
            self.write_part(day, part).await?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<Vec<WrittenFile>, ConnectorError> {
        let open = std::mem::take(&mut self.open);
        for (_, file) in open {
            let written = close(Arc::clone(&self.store), file, &self.types, &self.what).await?;
            self.done.push(written);
        }
        Ok(self.done)
    }
}

/// `YYYY-MM-DD` of a day since 1970-01-01.
pub fn day_text(day: i32) -> String {
    // days from 0001-01-01 (CE day 1) to 1970-01-01
    const UNIX_EPOCH_CE_DAY: i32 = 719_163;
    chrono::NaiveDate::from_num_days_from_ce_opt(day.saturating_add(UNIX_EPOCH_CE_DAY))
        .map_or_else(|| day.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

/// The Iceberg metrics of a written file from its footer: per top-level column its values,
/// nulls and bytes, and for integer columns the bounds (which the mirror's merge and readers
/// use to skip files).
fn metrics(
    metadata: &ParquetMetaData,
    path: Path,
    size: u64,
    day: Option<i32>,
    types: &HashMap<i32, Type>,
) -> WrittenFile {
    let mut file = WrittenFile {
        path,
        size,
        rows: u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0),
        day,
        value_counts: HashMap::new(),
        null_counts: HashMap::new(),
        column_sizes: HashMap::new(),
        lower_bounds: HashMap::new(),
        upper_bounds: HashMap::new(),
    };
    let mut bounds: HashMap<i32, Option<(i64, i64)>> = HashMap::new();
    for group in metadata.row_groups() {
        for column in group.columns() {
            let descriptor = column.column_descr();
            if column.column_path().parts().len() != 1
                || !descriptor.self_type().get_basic_info().has_id()
            {
                continue; // a list's elements: counted by their own ids, left without metrics
            }
            let id = descriptor.self_type().get_basic_info().id();
            *file.value_counts.entry(id).or_default() +=
                u64::try_from(column.num_values()).unwrap_or(0);
            *file.column_sizes.entry(id).or_default() +=
                u64::try_from(column.compressed_size()).unwrap_or(0);
            let stats = column.statistics();
            if let Some(nulls) = stats.and_then(Statistics::null_count_opt) {
                *file.null_counts.entry(id).or_default() += nulls;
            }
            let group_bounds = match stats {
                Some(Statistics::Int32(s)) => s
                    .min_opt()
                    .zip(s.max_opt())
                    .map(|(a, b)| (i64::from(*a), i64::from(*b))),
                Some(Statistics::Int64(s)) => s.min_opt().zip(s.max_opt()).map(|(a, b)| (*a, *b)),
                _ => None,
            };
            // a row group without bounds (all null) leaves the file without them
            let entry = bounds.entry(id).or_insert(group_bounds);
            *entry = match (*entry, group_bounds) {
                (Some((low, high)), Some((l, h))) => Some((low.min(l), high.max(h))),
                _ => None,
            };
        }
    }
    for (id, range) in bounds {
        let Some((low, high)) = range else { continue };
        let datums = match types.get(&id) {
            Some(Type::Primitive(PrimitiveType::Long)) => (Datum::long(low), Datum::long(high)),
            Some(Type::Primitive(PrimitiveType::Int)) => {
                match (i32::try_from(low), i32::try_from(high)) {
                    (Ok(l), Ok(h)) => (Datum::int(l), Datum::int(h)),
                    _ => continue,
                }
            }
            _ => continue,
        };
        file.lower_bounds.insert(id, datums.0);
        file.upper_bounds.insert(id, datums.1);
    }
    file
}
