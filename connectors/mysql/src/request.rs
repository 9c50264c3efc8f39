//! MySQL's GTID dump request (COM_BINLOG_DUMP_GTID): the executed GTID set as the SID block the
//! server expects. MariaDB takes `@slave_connect_state` instead (see `source.rs`).

use headwater_contract::MysqlGtidSet;
use mysql_common::packets::{GnoInterval, Sid};

/// The executed set as SID entries: one per server UUID with its `[start, end)` intervals.
pub fn mysql_sids(set: &MysqlGtidSet) -> Vec<Sid<'static>> {
    set.sources()
        .filter(|(_, intervals)| !intervals.is_empty())
        .map(|(uuid, intervals)| {
            Sid::new(*uuid).with_intervals(
                intervals
                    .iter()
                    .map(|&(start, end)| GnoInterval::new(start, end))
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::packets::ComBinlogDumpGtid;
    use mysql_common::proto::MySerialize;

    /// COM_BINLOG_DUMP_GTID as documented in MySQL's client/server protocol reference:
    /// command 0x1e, flags (2; 0x04 BINLOG_THROUGH_GTID when a SID block follows), server id (4), file name length (4), file name, position (8),
    /// data size (4), then the SID block: n_sids (8), per SID the UUID (16), n_intervals (8) and
    /// each interval as start (8), end (8), end exclusive.
    #[test]
    fn the_dump_request_carries_the_executed_set_in_the_documented_layout() {
        let set: MysqlGtidSet =
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,00000000-0000-0000-0000-000000000001:3"
                .parse()
                .unwrap();
        let mut packet = Vec::new();
        ComBinlogDumpGtid::new(5401)
            .with_pos(4)
            .with_sids(mysql_sids(&set))
            .serialize(&mut packet);

        let mut expected = vec![0x1e];
        expected.extend_from_slice(&4u16.to_le_bytes()); // flags: BINLOG_THROUGH_GTID
        expected.extend_from_slice(&5401u32.to_le_bytes());
        expected.extend_from_slice(&0u32.to_le_bytes()); // no file name
        expected.extend_from_slice(&4u64.to_le_bytes()); // position
        let mut block = Vec::new();
        block.extend_from_slice(&2u64.to_le_bytes());
        // UUIDs in byte order: 00000000-… sorts first
        let first = [0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        block.extend_from_slice(&first);
        block.extend_from_slice(&1u64.to_le_bytes());
        block.extend_from_slice(&3u64.to_le_bytes());
        block.extend_from_slice(&4u64.to_le_bytes());
        let second = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        block.extend_from_slice(&second);
        block.extend_from_slice(&2u64.to_le_bytes());
        for (start, end) in [(1u64, 6u64), (7, 8)] {
            block.extend_from_slice(&start.to_le_bytes());
            block.extend_from_slice(&end.to_le_bytes());
        }
        expected.extend_from_slice(&(block.len() as u32).to_le_bytes());
        expected.extend_from_slice(&block);
        assert_eq!(packet, expected);
    }
}
