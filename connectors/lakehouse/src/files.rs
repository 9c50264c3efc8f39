//! Parquet files as every format writes and reads them: the writer settings (tuned on the
//! sink's rows), and a file read back from the object store batch by batch.

use crate::error::lake_error;
use crate::file_reader::StoreFile;
use crate::format::FileBatches;
use crate::options::Compression;
use headwater_contract::ConnectorError;
use object_store::ObjectStore;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression as ParquetCompression, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// The Parquet settings of every file the sink writes.
pub fn writer_properties(compression: Compression) -> WriterProperties {
    let codec = match compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::default()),
        Compression::Snappy => ParquetCompression::SNAPPY,
        Compression::Gzip => ParquetCompression::GZIP(GzipLevel::default()),
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(codec)
        // A dictionary pays for columns of few values; for unique ones (keys, names) interning
        // every value until the page limit is hit was a fifth of the sink's time, and their
        // dictionary pages compressed worse than plain values: 1,000,000 rows took 24 MB
        // instead of 10 MB. A small limit keeps dictionaries for the columns they suit.
        .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT)
        // one distinct value per row: a dictionary only costs time
        .set_column_dictionary_enabled(ColumnPath::from(crate::batch::POSITION), false)
        // position texts do not sort in log order (`file:12` > `file:100`), so their minimum and
        // maximum would let no reader skip a file, and comparing every value is wasted work
        .set_column_statistics_enabled(
            ColumnPath::from(crate::batch::POSITION),
            EnabledStatistics::None,
        )
        // a row group is encoded in memory until it is complete: bounded rows, bounded memory
        // (a merge or compaction never holds a whole target-size file)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

pub const DICTIONARY_PAGE_LIMIT: usize = 32 * 1024;
pub const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Rows per batch read back from a file (merges and compaction).
pub const READ_BATCH_ROWS: usize = 8192;

/// Reads the file at `path` (of `size` bytes) batch by batch; with `only`, just those columns
/// (in the file's order). `what` names the read in errors.
pub async fn read_batches(
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
    only: Option<&[String]>,
    what: &str,
) -> Result<FileBatches, ConnectorError> {
    let reader = StoreFile::new(store, path, size);
    let mut builder = ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| lake_error(what, e))?
        .with_batch_size(READ_BATCH_ROWS);
    if let Some(names) = only {
        let schema = builder.schema();
        let roots: Vec<usize> = names
            .iter()
            .filter_map(|name| schema.index_of(name).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        builder = builder.with_projection(mask);
    }
    builder.build().map_err(|e| lake_error(what, e))
}
