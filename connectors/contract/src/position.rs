//! Typed, totally ordered source positions.
//!
//! A position names a point in a source's change log *between* two changes: everything before it
//! has been processed. It can point inside a transaction (`rows_done`), so a restart inside a
//! transaction of millions of rows re-reads the transaction but skips the rows already durable.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A position in one source's log. Positions of different kinds are not comparable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    Mysql(BinlogPosition),
    Postgres(PgPosition),
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match (self, other) {
            (Position::Mysql(a), Position::Mysql(b)) => Some(a.cmp(b)),
            (Position::Postgres(a), Position::Postgres(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Mysql(p) => p.fmt(f),
            Position::Postgres(p) => p.fmt(f),
        }
    }
}

/// One MariaDB global transaction id: `domain-server-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MariadbGtid {
    pub domain: u32,
    pub server_id: u32,
    pub sequence: u64,
}

impl fmt::Display for MariadbGtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server_id, self.sequence)
    }
}

/// Error parsing a GTID or an LSN from text.
#[derive(Debug, thiserror::Error)]
#[error("invalid {what} `{text}`: expected {expected}")]
pub struct ParsePositionError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

impl FromStr for MariadbGtid {
    type Err = ParsePositionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParsePositionError {
            what: "MariaDB GTID",
            text: text.to_string(),
            expected: "domain-server_id-sequence, e.g. 0-1-42",
        };
        let mut parts = text.trim().splitn(3, '-');
        let domain = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let server_id = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let sequence = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Ok(MariadbGtid {
            domain,
            server_id,
            sequence,
        })
    }
}

/// MariaDB's replication state: the last GTID applied in each replication domain
/// (what `@@gtid_binlog_pos` and `@slave_connect_state` hold).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct GtidSet {
    domains: BTreeMap<u32, MariadbGtid>,
}

impl GtidSet {
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Records `gtid` as the latest transaction of its domain.
    pub fn apply(&mut self, gtid: MariadbGtid) {
        self.domains.insert(gtid.domain, gtid);
    }

    pub fn domains(&self) -> impl Iterator<Item = &MariadbGtid> {
        self.domains.values()
    }

    pub fn get(&self, domain: u32) -> Option<&MariadbGtid> {
        self.domains.get(&domain)
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, gtid) in self.domains.values().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            gtid.fmt(f)?;
        }
        Ok(())
    }
}

impl FromStr for GtidSet {
    type Err = ParsePositionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = GtidSet::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            set.apply(part.parse()?);
        }
        Ok(set)
    }
}

impl From<GtidSet> for String {
    fn from(set: GtidSet) -> String {
        set.to_string()
    }
}

impl TryFrom<String> for GtidSet {
    type Error = ParsePositionError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// A point in a MySQL/MariaDB binlog stream.
///
/// Meaning: every transaction that starts before `(file, pos)` is processed, plus the first
/// `rows_done` row changes of the transaction that starts at `(file, pos)`. `gtid_set` is the
/// server's GTID state at `(file, pos)` (empty when GTIDs are off); with it the position survives
/// a failover to another server, where `file`/`pos` mean nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    pub file: Arc<str>,
    pub pos: u64,
    #[serde(default)]
    pub gtid_set: Arc<GtidSet>,
    #[serde(default)]
    pub rows_done: u64,
}

impl BinlogPosition {
    /// The numeric suffix of a binlog file name (`mariadb-bin.000042` → 42): binlog files are
    /// numbered in the order they were written, so this orders positions across rotations.
    pub fn file_number(&self) -> Option<u64> {
        self.file.rsplit('.').next().and_then(|n| n.parse().ok())
    }
}

impl Ord for BinlogPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.file_number()
            .cmp(&other.file_number())
            .then_with(|| self.file.cmp(&other.file))
            .then(self.pos.cmp(&other.pos))
            .then(self.rows_done.cmp(&other.rows_done))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if self.rows_done > 0 {
            write!(f, "+{} rows", self.rows_done)?;
        }
        if !self.gtid_set.is_empty() {
            write!(f, " (gtid {})", self.gtid_set)?;
        }
        Ok(())
    }
}

/// A PostgreSQL write-ahead-log location.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for Lsn {
    type Err = ParsePositionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || ParsePositionError {
            what: "LSN",
            text: text.to_string(),
            expected: "two hexadecimal numbers, e.g. 16/B374D848",
        };
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> String {
        lsn.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = ParsePositionError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

/// A point in a PostgreSQL logical replication stream.
///
/// Meaning: every transaction whose commit record lies before `lsn` is processed, plus the first
/// `rows_done` changes of the transaction whose commit record is at `lsn`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PgPosition {
    pub lsn: Lsn,
    #[serde(default)]
    pub rows_done: u64,
}

impl fmt::Display for PgPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.lsn)?;
        if self.rows_done > 0 {
            write!(f, "+{} rows", self.rows_done)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binlog(file: &str, pos: u64, rows_done: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            pos,
            gtid_set: Arc::default(),
            rows_done,
        }
    }

    #[test]
    fn binlog_positions_order_by_file_number_then_offset_then_rows() {
        let mut positions = [
            binlog("mariadb-bin.000010", 4, 0),
            binlog("mariadb-bin.000009", 900, 3),
            binlog("mariadb-bin.000009", 900, 0),
            binlog("mariadb-bin.000009", 120, 7),
        ];
        positions.sort();
        let rendered: Vec<String> = positions.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            rendered,
            [
                "mariadb-bin.000009:120+7 rows",
                "mariadb-bin.000009:900",
                "mariadb-bin.000009:900+3 rows",
                "mariadb-bin.000010:4",
            ]
        );
    }

    #[test]
    fn file_number_beats_lexical_order_when_the_suffix_grows() {
        assert!(binlog("b.999999", 4, 0) < binlog("b.1000000", 4, 0));
    }

    #[test]
    fn positions_of_different_sources_do_not_compare() {
        let mysql = Position::Mysql(binlog("b.000001", 4, 0));
        let pg = Position::Postgres(PgPosition {
            lsn: Lsn(1),
            rows_done: 0,
        });
        assert_eq!(mysql.partial_cmp(&pg), None);
        assert!(
            Position::Postgres(PgPosition {
                lsn: Lsn(5),
                rows_done: 9
            }) > pg
        );
    }

    #[test]
    fn pg_positions_order_by_lsn_then_rows() {
        let a = PgPosition {
            lsn: Lsn(0x1_0000_0000),
            rows_done: 0,
        };
        let b = PgPosition {
            lsn: Lsn(0x1_0000_0000),
            rows_done: 1,
        };
        let c = PgPosition {
            lsn: Lsn(0x1_0000_0001),
            rows_done: 0,
        };
        assert!(a < b && b < c);
    }

    #[test]
    fn lsn_round_trips_through_text() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16-B374".parse::<Lsn>().is_err());
        assert!("zz/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn gtid_set_keeps_the_latest_per_domain_and_round_trips() {
        let mut set: GtidSet = "0-1-10, 2-5-7".parse().unwrap();
        set.apply("0-1-11".parse().unwrap());
        assert_eq!(set.to_string(), "0-1-11,2-5-7");
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "\"0-1-11,2-5-7\"");
        assert_eq!(serde_json::from_str::<GtidSet>(&json).unwrap(), set);
        assert!("0-1".parse::<GtidSet>().is_err());
    }

    #[test]
    fn position_serializes_with_a_kind_tag() {
        let pos = Position::Mysql(BinlogPosition {
            file: "mariadb-bin.000002".into(),
            pos: 385,
            gtid_set: Arc::new("0-1-5".parse().unwrap()),
            rows_done: 2,
        });
        let json = serde_json::to_value(&pos).unwrap();
        assert_eq!(json["kind"], "mysql");
        assert_eq!(json["gtid_set"], "0-1-5");
        let back: Position = serde_json::from_value(json).unwrap();
        assert_eq!(back, pos);
    }
}
