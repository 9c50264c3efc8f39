//! Avro object container files: header with the schema, then blocks of records, each closed by
//! the file's sync marker (Avro 1.11 specification, "Object Container Files").

use headwater_contract::avro::{put_bytes, put_long, put_str};
use serde::Deserialize;
use std::io::{self, Write};

/// How blocks are compressed (the Avro spec's `avro.codec`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// Uncompressed.
    Null,
    /// Raw DEFLATE (RFC 1951), which every Avro implementation reads; fast level.
    #[default]
    Deflate,
}

impl Codec {
    fn name(self) -> &'static [u8] {
        match self {
            Codec::Null => b"null",
            Codec::Deflate => b"deflate",
        }
    }
}

const MAGIC: &[u8; 4] = b"Obj\x01";

/// Writes one container file. Records are encoded by the caller; the writer frames them.
pub struct ContainerWriter<W: Write> {
    out: W,
    codec: Codec,
    compressed: Vec<u8>,
    sync_marker: [u8; 16],
    block: Vec<u8>,
    block_records: u64,
    bytes_written: u64,
    records_written: u64,
}

/// Records are grouped into blocks of about this size before they reach the file.
const BLOCK_BYTES: usize = 256 * 1024;

impl<W: Write> ContainerWriter<W> {
    pub fn new(out: W, schema_json: &str, sync_marker: [u8; 16]) -> io::Result<Self> {
        Self::with_codec(out, schema_json, sync_marker, Codec::Null)
    }

    pub fn with_codec(
        mut out: W,
        schema_json: &str,
        sync_marker: [u8; 16],
        codec: Codec,
    ) -> io::Result<Self> {
        let mut header = Vec::with_capacity(schema_json.len() + 64);
        header.extend_from_slice(MAGIC);
        put_long(&mut header, 2);
        put_str(&mut header, "avro.schema");
        put_bytes(&mut header, schema_json.as_bytes());
        put_str(&mut header, "avro.codec");
        put_bytes(&mut header, codec.name());
        put_long(&mut header, 0);
        header.extend_from_slice(&sync_marker);
        out.write_all(&header)?;
        Ok(ContainerWriter {
            out,
            codec,
            compressed: Vec::new(),
            sync_marker,
            block: Vec::with_capacity(BLOCK_BYTES + 4096),
            block_records: 0,
            bytes_written: header.len() as u64,
            records_written: 0,
        })
    }

    /// Appends one encoded record.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.block.extend_from_slice(record);
        self.block_records += 1;
        self.records_written += 1;
        if self.block.len() >= BLOCK_BYTES {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> io::Result<()> {
        if self.block_records == 0 {
            return Ok(());
        }
        let data: &[u8] = match self.codec {
            Codec::Null => &self.block,
            Codec::Deflate => {
                self.compressed.clear();
                let mut encoder = flate2::write::DeflateEncoder::new(
                    std::mem::take(&mut self.compressed),
                    flate2::Compression::fast(),
                );
                encoder.write_all(&self.block)?;
                self.compressed = encoder.finish()?;
                &self.compressed
            }
        };
        let mut framing = Vec::with_capacity(20);
        put_long(&mut framing, self.block_records as i64);
        put_long(&mut framing, data.len() as i64);
        self.out.write_all(&framing)?;
        self.out.write_all(data)?;
        self.out.write_all(&self.sync_marker)?;
        self.bytes_written += (framing.len() + data.len() + 16) as u64;
        self.block.clear();
        self.block_records = 0;
        Ok(())
    }

    /// Bytes in the file, including the block still buffered.
    pub fn len(&self) -> u64 {
        self.bytes_written + self.block.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.records_written == 0
    }

    pub fn records(&self) -> u64 {
        self.records_written
    }

    /// Writes the last block and returns the underlying writer (to be synced by the caller).
    pub fn finish(mut self) -> io::Result<W> {
        self.write_block()?;
        self.out.flush()?;
        Ok(self.out)
    }
}
