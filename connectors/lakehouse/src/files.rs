//! Parquet files as every format writes and reads them: the writer settings (tuned on the
//! sink's rows), and a file read back from the object store batch by batch.

use crate::error::lake_error;
use crate::file_reader::StoreFile;
use crate::format::FileBatches;
use crate::options::{Compression, ParquetEncodings};
use arrow::datatypes::{DataType, Schema};
use headwater_contract::ConnectorError;
use object_store::ObjectStore;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::basic::{Compression as ParquetCompression, Encoding, GzipLevel, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::sync::Arc;

/// The Parquet settings of every file the sink writes.
fn writer_properties(compression: Compression) -> WriterProperties {
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

/// How a sink writes its Parquet files: the settings every file shares, and how a column is
/// encoded past its dictionary.
#[derive(Clone, Debug)]
pub struct ParquetSettings {
    properties: WriterProperties,
    encodings: ParquetEncodings,
}

impl ParquetSettings {
    pub fn new(compression: Compression, encodings: ParquetEncodings) -> Self {
        ParquetSettings {
            properties: writer_properties(compression),
            encodings,
        }
    }

    /// The settings of a file of `schema`. With `"delta"` encodings each column gets, once its
    /// dictionary is full, the encoding that suits its type rather than plain values: the
    /// differences of integers, dates and timestamps (`DELTA_BINARY_PACKED`), and the prefixes
    /// texts share with the one before (`DELTA_BYTE_ARRAY`: keys, codes and log positions share
    /// most of theirs). The pages left to zstd are a third of the plain ones: the lakehouse
    /// benchmark ran 10% faster. Blobs and floats stay plain (Spark before 3.4 cannot read
    /// `DELTA_LENGTH_BYTE_ARRAY` alone).
    pub fn for_schema(&self, schema: &Schema) -> WriterProperties {
        if self.encodings == ParquetEncodings::Plain {
            return self.properties.clone();
        }
        let mut builder = self.properties.clone().into_builder();
        for field in schema.fields() {
            let encoding = match field.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Date32
                | DataType::Timestamp(_, _) => Encoding::DELTA_BINARY_PACKED,
                // written as INT32 or INT64 up to 18 digits, as fixed-length bytes above
                DataType::Decimal128(precision, _) if *precision <= 18 => {
                    Encoding::DELTA_BINARY_PACKED
                }
                DataType::Utf8 => Encoding::DELTA_BYTE_ARRAY,
                _ => continue,
            };
            builder =
                builder.set_column_encoding(ColumnPath::from(field.name().as_str()), encoding);
        }
        builder.build()
    }
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
