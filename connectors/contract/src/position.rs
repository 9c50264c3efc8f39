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

pub use crate::backfill::BackfillState;

/// A position in one source's log. Positions of different kinds are not comparable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Position {
    Mysql(BinlogPosition),
    Postgres(PgPosition),
}

impl Position {
    /// A stored position of a MySQL source; any other kind means the state directory belongs
    /// to another pipeline.
    pub fn into_mysql(self) -> Result<BinlogPosition, crate::ConnectorError> {
        match self {
            Position::Mysql(p) => Ok(p),
            other => Err(Self::wrong_kind(&other, "a MySQL binlog position")),
        }
    }

    /// A stored position of a PostgreSQL source (see [`Position::into_mysql`]).
    pub fn into_postgres(self) -> Result<PgPosition, crate::ConnectorError> {
        match self {
            Position::Postgres(p) => Ok(p),
            other => Err(Self::wrong_kind(&other, "a PostgreSQL position")),
        }
    }

    fn wrong_kind(found: &Position, expected: &str) -> crate::ConnectorError {
        crate::ConnectorError::definite(format!(
            "the stored position {found} is not {expected}; this state directory belongs to another kind of source — use a separate state.path"
        ))
    }
}

impl From<BinlogPosition> for Position {
    fn from(position: BinlogPosition) -> Self {
        Position::Mysql(position)
    }
}

impl From<PgPosition> for Position {
    fn from(position: PgPosition) -> Self {
        Position::Postgres(position)
    }
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

impl Position {
    /// The snapshot or backfill state carried by this position.
    pub fn backfill(&self) -> Option<&Arc<BackfillState>> {
        match self {
            Position::Mysql(p) => p.backfill.as_ref(),
            Position::Postgres(p) => p.backfill.as_ref(),
        }
    }

    pub fn set_backfill(&mut self, backfill: Option<Arc<BackfillState>>) {
        match self {
            Position::Mysql(p) => p.backfill = backfill,
            Position::Postgres(p) => p.backfill = backfill,
        }
    }

    /// The log position alone, without snapshot progress.
    pub fn without_backfill(&self) -> Position {
        let mut plain = self.clone();
        plain.set_backfill(None);
        plain
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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MariadbGtidState {
    domains: BTreeMap<u32, MariadbGtid>,
}

impl MariadbGtidState {
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

impl fmt::Display for MariadbGtidState {
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

impl FromStr for MariadbGtidState {
    type Err = ParsePositionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = MariadbGtidState::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            set.apply(part.parse()?);
        }
        Ok(set)
    }
}

/// A MySQL server UUID (the source id of its GTIDs).
pub type ServerUuid = [u8; 16];

/// MySQL's executed GTID set: per server UUID, the transaction numbers as sorted, disjoint,
/// half-open intervals `[start, end)` (what `@@gtid_executed` shows as `uuid:1-5:7`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MysqlGtidSet {
    sources: BTreeMap<ServerUuid, Vec<(u64, u64)>>,
}

impl MysqlGtidSet {
    pub fn is_empty(&self) -> bool {
        self.sources.values().all(Vec::is_empty)
    }

    /// Adds transaction `gno` of server `uuid`, merging adjacent intervals.
    pub fn add(&mut self, uuid: ServerUuid, gno: u64) {
        self.add_interval(uuid, gno, gno + 1);
    }

    /// Adds the half-open interval `[start, end)` of server `uuid`.
    pub fn add_interval(&mut self, uuid: ServerUuid, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let intervals = self.sources.entry(uuid).or_default();
        intervals.push((start, end));
        intervals.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
        for &(s, e) in intervals.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *intervals = merged;
    }

    pub fn contains(&self, uuid: &ServerUuid, gno: u64) -> bool {
        self.sources
            .get(uuid)
            .is_some_and(|iv| iv.iter().any(|&(s, e)| s <= gno && gno < e))
    }

    /// Every server UUID with its intervals, in UUID order.
    pub fn sources(&self) -> impl Iterator<Item = (&ServerUuid, &[(u64, u64)])> {
        self.sources.iter().map(|(uuid, iv)| (uuid, iv.as_slice()))
    }
}

/// `3e11fa47-71ca-11e1-9e33-c80aa9429562`, as MySQL prints server UUIDs.
pub fn format_uuid(uuid: &ServerUuid) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn parse_uuid(text: &str) -> Option<ServerUuid> {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(uuid)
}

impl fmt::Display for MysqlGtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (uuid, intervals) in &self.sources {
            if intervals.is_empty() {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(&format_uuid(uuid))?;
            for &(start, end) in intervals {
                if end == start + 1 {
                    write!(f, ":{start}")?;
                } else {
                    write!(f, ":{start}-{}", end - 1)?;
                }
            }
        }
        Ok(())
    }
}

impl FromStr for MysqlGtidSet {
    type Err = ParsePositionError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            ParsePositionError {
            what: "MySQL GTID set",
            text: text.to_string(),
            expected: "uuid:interval[:interval…] entries separated by commas, e.g. 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7",
        }
        };
        let mut set = MysqlGtidSet::default();
        // @@gtid_executed wraps long sets over lines
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for entry in compact.split(',').filter(|e| !e.is_empty()) {
            let mut parts = entry.split(':');
            let uuid = parts.next().and_then(parse_uuid).ok_or_else(bad)?;
            for interval in parts {
                let (start, end) = match interval.split_once('-') {
                    Some((s, e)) => (
                        s.parse::<u64>().map_err(|_| bad())?,
                        e.parse::<u64>().map_err(|_| bad())?,
                    ),
                    None => {
                        let n = interval.parse::<u64>().map_err(|_| bad())?;
                        (n, n)
                    }
                };
                if start == 0 || end < start {
                    return Err(bad());
                }
                set.add_interval(uuid, start, end + 1);
            }
        }
        Ok(set)
    }
}

/// The GTID state of a binlog position, in the flavour of the server that wrote it. Empty when
/// the server has GTIDs off; then only file/offset positions work, and not across servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum GtidSet {
    Mariadb(MariadbGtidState),
    Mysql(MysqlGtidSet),
}

impl Default for GtidSet {
    fn default() -> Self {
        GtidSet::Mariadb(MariadbGtidState::default())
    }
}

impl GtidSet {
    pub fn is_empty(&self) -> bool {
        match self {
            GtidSet::Mariadb(s) => s.is_empty(),
            GtidSet::Mysql(s) => s.is_empty(),
        }
    }
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GtidSet::Mariadb(s) => s.fmt(f),
            GtidSet::Mysql(s) => s.fmt(f),
        }
    }
}

impl FromStr for GtidSet {
    type Err = ParsePositionError;
    /// MySQL sets name server UUIDs (`uuid:1-5`); MariaDB states are `domain-server-seq` lists.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.contains(':') {
            Ok(GtidSet::Mysql(text.parse()?))
        } else {
            Ok(GtidSet::Mariadb(text.parse()?))
        }
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
    /// The snapshot or backfill in progress at this point of the stream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Arc<BackfillState>>,
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
            .then(backfill_rows(&self.backfill).cmp(&backfill_rows(&other.backfill)))
    }
}

impl PartialOrd for BinlogPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backfill = self.backfill.as_deref().map(|b| b as &dyn fmt::Display);
        write_binlog_position(f, self, &*self.gtid_set, backfill)
    }
}

/// The text of a MySQL position, with its GTID set and backfill state given already
/// formatted or not (see [`PositionText`]).
fn write_binlog_position(
    out: &mut dyn fmt::Write,
    position: &BinlogPosition,
    gtid_set: &dyn fmt::Display,
    backfill: Option<&dyn fmt::Display>,
) -> fmt::Result {
    // a sink writes one per row (the Delta tables' lineage): numbers through itoa rather than
    // the formatting machinery
    let mut number = itoa::Buffer::new();
    out.write_str(&position.file)?;
    out.write_char(':')?;
    out.write_str(number.format(position.pos))?;
    if position.rows_done > 0 {
        out.write_char('+')?;
        out.write_str(number.format(position.rows_done))?;
        out.write_str(" rows")?;
    }
    if !position.gtid_set.is_empty() {
        out.write_str(" (gtid ")?;
        write!(out, "{gtid_set}")?;
        out.write_char(')')?;
    }
    if let Some(backfill) = backfill {
        write!(out, "{backfill}")?;
    }
    Ok(())
}

/// The text of a PostgreSQL position, with its backfill state given already formatted or not.
fn write_pg_position(
    out: &mut dyn fmt::Write,
    position: &PgPosition,
    backfill: Option<&dyn fmt::Display>,
) -> fmt::Result {
    write!(out, "{}", position.lsn)?;
    if position.rows_done > 0 {
        write!(out, "+{} rows", position.rows_done)?;
    }
    if let Some(backfill) = backfill {
        write!(out, "{backfill}")?;
    }
    Ok(())
}

/// Writes positions as their `Display` text, formatting the parts every record of a
/// transaction or batch shares once: the GTID set (one `Arc` per transaction; a MySQL set
/// with many server UUIDs runs to hundreds of bytes) and the backfill state. For writers that
/// put a position on every record (the Kafka sink's `headwater.position` header).
#[derive(Default)]
pub struct PositionText {
    gtid_set: Option<(Arc<GtidSet>, String)>,
    backfill: Option<(Arc<BackfillState>, String)>,
}

impl PositionText {
    /// Appends `position`'s text to `out`: the same as `position.to_string()`.
    pub fn write(&mut self, position: &Position, out: &mut String) {
        self.write_parts(position, true, out);
    }

    /// Appends the text of the log position alone: the same as
    /// `position.without_backfill().to_string()`, without cloning the position.
    pub fn write_without_backfill(&mut self, position: &Position, out: &mut String) {
        self.write_parts(position, false, out);
    }

    fn write_parts(&mut self, position: &Position, with_backfill: bool, out: &mut String) {
        let backfill = match position.backfill() {
            Some(state) if with_backfill => {
                Some(formatted(&mut self.backfill, state) as &dyn fmt::Display)
            }
            _ => None,
        };
        let _ = match position {
            Position::Mysql(p) => {
                let gtid_set = formatted(&mut self.gtid_set, &p.gtid_set);
                write_binlog_position(out, p, gtid_set, backfill)
            }
            Position::Postgres(p) => write_pg_position(out, p, backfill),
        };
    }
}

/// The text of `value`, formatted again only when it is another `Arc` than last time.
fn formatted<'c, T: fmt::Display>(
    slot: &'c mut Option<(Arc<T>, String)>,
    value: &Arc<T>,
) -> &'c String {
    if !matches!(slot, Some((held, _)) if Arc::ptr_eq(held, value)) {
        *slot = None;
    }
    &slot
        .get_or_insert_with(|| (Arc::clone(value), value.to_string()))
        .1
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgPosition {
    pub lsn: Lsn,
    #[serde(default)]
    pub rows_done: u64,
    /// The snapshot or backfill in progress at this point of the stream, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<Arc<BackfillState>>,
}

impl PgPosition {
    pub fn at(lsn: Lsn, rows_done: u64) -> Self {
        PgPosition {
            lsn,
            rows_done,
            backfill: None,
        }
    }
}

impl Ord for PgPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        self.lsn
            .cmp(&other.lsn)
            .then(self.rows_done.cmp(&other.rows_done))
            .then(backfill_rows(&self.backfill).cmp(&backfill_rows(&other.backfill)))
    }
}

impl PartialOrd for PgPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Snapshot rows are emitted at one log position; their count orders them.
fn backfill_rows(backfill: &Option<Arc<BackfillState>>) -> u64 {
    backfill.as_ref().map_or(0, |b| b.rows_emitted)
}

impl fmt::Display for PgPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backfill = self.backfill.as_deref().map(|b| b as &dyn fmt::Display);
        write_pg_position(f, self, backfill)
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
            backfill: None,
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
        let pg = Position::Postgres(PgPosition::at(Lsn(1), 0));
        assert_eq!(mysql.partial_cmp(&pg), None);
        assert!(Position::Postgres(PgPosition::at(Lsn(5), 9)) > pg);
    }

    #[test]
    fn pg_positions_order_by_lsn_then_rows() {
        let a = PgPosition::at(Lsn(0x1_0000_0000), 0);
        let b = PgPosition::at(Lsn(0x1_0000_0000), 1);
        let c = PgPosition::at(Lsn(0x1_0000_0001), 0);
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
    fn mariadb_state_keeps_the_latest_per_domain_and_round_trips() {
        let mut state: MariadbGtidState = "0-1-10, 2-5-7".parse().unwrap();
        state.apply("0-1-11".parse().unwrap());
        assert_eq!(state.to_string(), "0-1-11,2-5-7");
        let set = GtidSet::Mariadb(state);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "\"0-1-11,2-5-7\"");
        assert_eq!(serde_json::from_str::<GtidSet>(&json).unwrap(), set);
        assert!("0-1".parse::<GtidSet>().is_err());
    }

    #[test]
    fn mysql_gtid_sets_merge_intervals_and_round_trip() {
        let uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let mut set: MysqlGtidSet =
            format!("{uuid}:1-5:7,\n 3e11fa47-71ca-11e1-9e33-c80aa9429563:2")
                .parse()
                .unwrap();
        let first = *set.sources().next().unwrap().0;
        assert!(set.contains(&first, 5) && !set.contains(&first, 6));
        set.add(first, 6);
        assert_eq!(
            set.to_string(),
            "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-7,3e11fa47-71ca-11e1-9e33-c80aa9429563:2"
        );
        let any: GtidSet = set.to_string().parse().unwrap();
        assert_eq!(any, GtidSet::Mysql(set));
        assert!("3e11fa47:1".parse::<MysqlGtidSet>().is_err());
        assert!(format!("{uuid}:0").parse::<MysqlGtidSet>().is_err());
        assert!(format!("{uuid}:5-3").parse::<MysqlGtidSet>().is_err());
        assert_eq!("".parse::<GtidSet>().unwrap(), GtidSet::default());
    }

    #[test]
    fn position_text_is_the_display_text_and_follows_a_new_gtid_set() {
        let mut text = PositionText::default();
        let at = |gtid: &Arc<GtidSet>, rows_done| {
            Position::Mysql(BinlogPosition {
                file: Arc::from("bin.000002"),
                pos: 120,
                gtid_set: Arc::clone(gtid),
                rows_done,
                backfill: Some(Arc::new(BackfillState::default())),
            })
        };
        let first: Arc<GtidSet> = Arc::new("0-1-5,1-2-9".parse().unwrap());
        let second: Arc<GtidSet> = Arc::new("0-1-6,1-2-9".parse().unwrap());
        for position in [at(&first, 1), at(&first, 2), at(&second, 1)] {
            let mut out = String::new();
            text.write(&position, &mut out);
            assert_eq!(out, position.to_string());
        }
        let pg = Position::Postgres(PgPosition::at(Lsn(0x16_B374_D848), 3));
        let mut out = String::new();
        text.write(&pg, &mut out);
        assert_eq!(out, pg.to_string());
        for position in [at(&first, 1), at(&second, 2), pg] {
            let mut out = String::new();
            text.write_without_backfill(&position, &mut out);
            assert_eq!(out, position.without_backfill().to_string());
        }
    }

    #[test]
    fn position_serializes_with_a_kind_tag() {
        let pos = Position::Mysql(BinlogPosition {
            file: "mariadb-bin.000002".into(),
            pos: 385,
            gtid_set: Arc::new("0-1-5".parse().unwrap()),
            rows_done: 2,
            backfill: None,
        });
        let json = serde_json::to_value(&pos).unwrap();
        assert_eq!(json["kind"], "mysql");
        assert_eq!(json["gtid_set"], "0-1-5");
        let back: Position = serde_json::from_value(json).unwrap();
        assert_eq!(back, pos);
    }
}
