//! Checks of counts in event bodies that `mysql_common` trusts: it reserves memory for as many
//! entries as a count says before reading them, so a corrupt count asks for terabytes and the
//! allocation failure aborts the process (a panic could be caught; an abort cannot). Found by
//! fuzzing (`fuzz/`); each check answers `false` only on evidence that a count cannot fit.

/// What a caught panic of the event parser said.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the event parser failed".into())
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// A length-encoded integer at `at`: its value and width, read as `mysql_common` reads them
/// (0xFB and 0xFF, which MySQL does not use there, are 0).
fn lenenc(data: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *data.get(at)?;
    let width = match first {
        0..=0xFA => return Some((u64::from(first), 1)),
        0xFB | 0xFF => return Some((0, 1)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
    };
    let bytes = data.get(at + 1..at + 1 + width)?;
    let mut raw = [0u8; 8];
    raw[..width].copy_from_slice(bytes);
    Some((u64::from_le_bytes(raw), width + 1))
}

/// Whether a MySQL PREVIOUS_GTIDS body's counts fit in its bytes. Layout (MySQL
/// `Previous_gtids_log_event`): a header of 8 bytes (the SID count, or with a format byte on
/// top the tagged format), then per SID a UUID (16), in the tagged format a tag (varlen length
/// and bytes), an interval count (8) and intervals of 16 bytes.
pub fn previous_gtids_fit(data: &[u8]) -> bool {
    let Some(header) = u64_at(data, 0) else {
        return false;
    };
    let tagged = header >> 56 != 0;
    let sids = if tagged {
        (header >> 8) & ((1 << 48) - 1)
    } else {
        header & ((1 << 56) - 1)
    };
    let mut at = 8usize;
    for _ in 0..sids {
        at += 16;
        if tagged {
            let Some(&first) = data.get(at) else {
                return false;
            };
            // varlen: the number of trailing ones of the first byte, plus one, is its length
            let width = match first.trailing_ones() {
                8 => 9,
                ones => ones as usize + 1,
            };
            let Some(bytes) = data.get(at..at + width) else {
                return false;
            };
            let mut raw = [0u8; 8];
            let value = if width == 9 {
                raw.copy_from_slice(&bytes[1..]);
                u64::from_le_bytes(raw)
            } else {
                raw[..width].copy_from_slice(bytes);
                u64::from_le_bytes(raw) >> width
            };
            at = match usize::try_from(value)
                .ok()
                .and_then(|tag| (at + width).checked_add(tag))
            {
                Some(next) => next,
                None => return false,
            };
        }
        let Some(intervals) = u64_at(data, at) else {
            return false;
        };
        at += 8;
        let room = (data.len() - at.min(data.len())) as u64 / 16;
        if intervals > room {
            return false;
        }
        at += intervals as usize * 16;
    }
    at <= data.len()
}

const SET_STR_VALUE: u8 = 5;
const ENUM_STR_VALUE: u8 = 6;

/// Whether the ENUM and SET label counts of a TABLE_MAP body's optional metadata fit in their
/// fields. Layout (MySQL `Table_map_log_event`): table id (6) and flags (2), database and
/// table names (length, bytes, NUL), column count, types, type metadata (length, bytes),
/// NULL bitmap, then optional metadata fields (type, length, value). An ENUM or SET field
/// holds, per column, a label count and the labels (length, bytes).
pub fn table_map_counts_fit(data: &[u8]) -> bool {
    let walk = || -> Option<usize> {
        let mut at = 8;
        for _ in 0..2 {
            at += 1 + usize::from(*data.get(at)?) + 1;
        }
        let (columns, width) = lenenc(data, at)?;
        at = at
            .checked_add(width)?
            .checked_add(usize::try_from(columns).ok()?)?;
        let (meta, width) = lenenc(data, at)?;
        at = at
            .checked_add(width)?
            .checked_add(usize::try_from(meta).ok()?)?;
        at.checked_add(usize::try_from(columns.div_ceil(8)).ok()?)
    };
    let Some(mut at) = walk() else {
        return true; // not the layout assumed: mysql_common's own checks apply
    };
    while at < data.len() {
        let kind = data[at];
        let Some((len, width)) = lenenc(data, at + 1) else {
            return true;
        };
        let start = at + 1 + width;
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
        else {
            return false;
        };
        if end > data.len() {
            return true; // mysql_common refuses a field longer than the event
        }
        if (kind == SET_STR_VALUE || kind == ENUM_STR_VALUE) && !labels_fit(&data[start..end]) {
            return false;
        }
        at = end;
    }
    true
}

/// Per column, a label count and that many labels of at least one byte each.
fn labels_fit(field: &[u8]) -> bool {
    let mut at = 0;
    while at < field.len() {
        let Some((count, width)) = lenenc(field, at) else {
            return true;
        };
        at += width;
        if count > (field.len() - at) as u64 {
            return false;
        }
        for _ in 0..count {
            let Some((len, width)) = lenenc(field, at) else {
                return true;
            };
            let Some(next) = usize::try_from(len)
                .ok()
                .and_then(|l| (at + width).checked_add(l))
            else {
                return false;
            };
            at = next;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing (`binlog_stream`): a SID count of ~2^51 made `mysql_common` reserve
    /// 3.4 PB and abort. Such bodies are refused before it reads them; real ones pass.
    #[test]
    fn previous_gtids_counts_are_checked_against_the_bytes() {
        let mut real = 1u64.to_le_bytes().to_vec();
        real.extend_from_slice(&[7; 16]);
        real.extend_from_slice(&1u64.to_le_bytes());
        real.extend_from_slice(&1u64.to_le_bytes());
        real.extend_from_slice(&10u64.to_le_bytes());
        assert!(previous_gtids_fit(&real));
        assert!(previous_gtids_fit(&0u64.to_le_bytes()));

        let mut huge_sids = real.clone();
        huge_sids[..8].copy_from_slice(&(1u64 << 51).to_le_bytes());
        assert!(!previous_gtids_fit(&huge_sids));
        let mut huge_intervals = real.clone();
        huge_intervals[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(!previous_gtids_fit(&huge_intervals));
        let mut tagged = (1u64 << 56 | 1 << 8 | 1).to_le_bytes().to_vec();
        tagged.extend_from_slice(&[7; 16]);
        tagged.push(0xFF); // a 9-byte varlen tag length
        tagged.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(!previous_gtids_fit(&tagged));
    }

    fn table_map(optional: &[u8]) -> Vec<u8> {
        let mut body = 42u64.to_le_bytes()[..6].to_vec();
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(b"\x01d\x00\x01t\x00");
        body.push(1); // one column
        body.push(247); // ENUM
        body.extend_from_slice(&[2, 247, 1]); // type metadata
        body.push(0); // NULL bitmap
        body.extend_from_slice(optional);
        body
    }

    /// Found by fuzzing (`binlog_rows`): a SET label count near 2^62 made `mysql_common`
    /// reserve memory for that many labels.
    #[test]
    fn label_counts_are_checked_against_their_field() {
        // ENUM_STR_VALUE: one column with labels "a" and "bc"
        let real = table_map(&[ENUM_STR_VALUE, 6, 2, 1, b'a', 2, b'b', b'c']);
        assert!(table_map_counts_fit(&real));
        let huge = table_map(&[SET_STR_VALUE, 10, 0xFE, 0, 0, 0, 0, 0, 0, 0, 0x40, 1]);
        assert!(!table_map_counts_fit(&huge));
        let too_many = table_map(&[ENUM_STR_VALUE, 3, 5, 1, b'a']);
        assert!(!table_map_counts_fit(&too_many));
        assert!(table_map_counts_fit(&table_map(&[])));
    }
}
