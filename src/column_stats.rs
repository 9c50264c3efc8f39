//! Distribution metrics: per table and column, how many row images had a value and how many a
//! NULL — enough to alert on a column that suddenly turns all-NULL. Each row image is walked
//! without decoding (`avro_scan`) and counted locally; the counters are updated once a tick.

use headwater_contract::avro_scan::count_nulls;
use headwater_contract::TableSchema;
use metrics::Counter;

/// One table version's counts since the last publish, and its counter handles.
pub struct TableStats {
    version: u32,
    rows: u64,
    nulls: Vec<u64>,
    values_counters: Vec<Counter>,
    null_counters: Vec<Counter>,
}

impl TableStats {
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Counts one row image (the after image of an insert, update or copied row).
    pub fn row(&mut self, schema: &TableSchema, image: &[u8]) {
        if count_nulls(schema, image, &mut self.nulls) {
            self.rows += 1;
        }
    }

    pub fn new(schema: &TableSchema) -> Self {
        let table = schema.id.to_string();
        let counter = |name: &'static str, column: &str| metrics::counter!(name, "table" => table.clone(), "column" => column.to_string());
        TableStats {
            version: schema.version,
            rows: 0,
            nulls: vec![0; schema.columns.len()],
            values_counters: schema
                .columns
                .iter()
                .map(|c| counter("headwater_column_values_total", &c.name))
                .collect(),
            null_counters: schema
                .columns
                .iter()
                .map(|c| counter("headwater_column_nulls_total", &c.name))
                .collect(),
        }
    }

    pub fn publish(&mut self) {
        if self.rows == 0 {
            return;
        }
        for ((nulls, null_counter), values_counter) in self
            .nulls
            .iter_mut()
            .zip(&self.null_counters)
            .zip(&self.values_counters)
        {
            null_counter.increment(*nulls);
            values_counter.increment(self.rows - *nulls);
            *nulls = 0;
        }
        self.rows = 0;
    }
}
