//! Distribution metrics: per table and column, how many row images had a value and how many a
//! NULL — enough to alert on a column that suddenly turns all-NULL. Each row image is walked
//! without decoding (`avro_scan`) and counted locally; the counters are updated once a tick.

use headwater_contract::avro_scan::count_nulls;
use headwater_contract::{TableId, TableSchema};
use metrics::Counter;
use std::collections::HashMap;

#[derive(Default)]
pub struct ColumnStats {
    tables: HashMap<TableId, TableStats>,
}

struct TableStats {
    version: u32,
    rows: u64,
    nulls: Vec<u64>,
    values_counters: Vec<Counter>,
    null_counters: Vec<Counter>,
}

impl TableStats {
    fn new(schema: &TableSchema) -> Self {
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

    fn publish(&mut self) {
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

impl ColumnStats {
    /// Counts one row image (the after image of an insert, update or copied row).
    pub fn row(&mut self, schema: &TableSchema, image: &[u8]) {
        let stats = match self.tables.get_mut(&schema.id) {
            Some(stats) if stats.version == schema.version => stats,
            _ => {
                if let Some(old) = self.tables.get_mut(&schema.id) {
                    old.publish();
                }
                self.tables
                    .entry(schema.id.clone())
                    .insert_entry(TableStats::new(schema))
                    .into_mut()
            }
        };
        if count_nulls(schema, image, &mut stats.nulls) {
            stats.rows += 1;
        }
    }

    /// Moves the local counts into the metrics.
    pub fn publish(&mut self) {
        for stats in self.tables.values_mut() {
            stats.publish();
        }
    }
}
