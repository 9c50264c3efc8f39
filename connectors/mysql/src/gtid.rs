//! MariaDB's GTID (162) and GTID_LIST (163) event bodies, which `mysql_common` does not parse.
//! Layouts from MariaDB's `log_event.h` (Gtid_log_event, Gtid_list_log_event).

use headwater_contract::MariadbGtid;

/// FL_STANDALONE: the transaction is one statement (DDL) without BEGIN/COMMIT.
const FL_STANDALONE: u8 = 1;

#[derive(Debug, PartialEq, Eq)]
pub struct GtidEvent {
    pub gtid: MariadbGtid,
    pub standalone: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed MariaDB {0} event ({1} bytes)")]
pub struct MalformedEvent(&'static str, usize);

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Parses a GTID event body: sequence (8), domain (4), flags (1), then optional parts.
pub fn parse_gtid(data: &[u8], server_id: u32) -> Result<GtidEvent, MalformedEvent> {
    let bad = || MalformedEvent("GTID", data.len());
    let sequence = u64_at(data, 0).ok_or_else(bad)?;
    let domain = u32_at(data, 8).ok_or_else(bad)?;
    let flags = *data.get(12).ok_or_else(bad)?;
    Ok(GtidEvent {
        gtid: MariadbGtid {
            domain,
            server_id,
            sequence,
        },
        standalone: flags & FL_STANDALONE != 0,
    })
}

/// Parses a GTID_LIST event body: a count (low 28 bits of 4 bytes), then (domain, server, seq).
pub fn parse_gtid_list(data: &[u8]) -> Result<Vec<MariadbGtid>, MalformedEvent> {
    let bad = || MalformedEvent("GTID_LIST", data.len());
    let count = (u32_at(data, 0).ok_or_else(bad)? & 0x0FFF_FFFF) as usize;
    let mut out = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        let at = 4 + i * 16;
        out.push(MariadbGtid {
            domain: u32_at(data, at).ok_or_else(bad)?,
            server_id: u32_at(data, at + 4).ok_or_else(bad)?,
            sequence: u64_at(data, at + 8).ok_or_else(bad)?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn gtid_event_body() {
        let mut body = 42u64.to_le_bytes().to_vec();
        body.extend_from_slice(&7u32.to_le_bytes());
        body.push(0x29); // standalone | ... as seen on DDL
        body.extend_from_slice(&[0; 6]);
        let event = parse_gtid(&body, 3).unwrap();
        assert_eq!(event.gtid.to_string(), "7-3-42");
        assert!(event.standalone);
        body[12] = 0x0c;
        assert!(!parse_gtid(&body, 3).unwrap().standalone);
        assert!(parse_gtid(&body[..10], 3).is_err());
    }

    #[test]
    fn gtid_list_body() {
        let mut body = (2u32 | 0x1000_0000).to_le_bytes().to_vec();
        for (d, s, q) in [(0u32, 1u32, 100u64), (5, 2, 7)] {
            body.extend_from_slice(&d.to_le_bytes());
            body.extend_from_slice(&s.to_le_bytes());
            body.extend_from_slice(&q.to_le_bytes());
        }
        let list = parse_gtid_list(&body).unwrap();
        assert_eq!(
            list.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            ["0-1-100", "5-2-7"]
        );
        assert!(parse_gtid_list(&body[..20]).is_err());
    }
}
