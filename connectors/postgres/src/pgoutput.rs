//! pgoutput protocol version 1 messages (PostgreSQL docs, "Logical Replication Message Formats").

use bytes::Buf;

#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput {0} message")]
pub struct Malformed(pub &'static str);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column of a tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TupleValue<'a> {
    Null,
    /// A TOASTed value that did not change; its value is not sent.
    UnchangedToast,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Begin {
        final_lsn: u64,
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        commit_ts: i64,
    },
    Origin,
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Vec<TupleValue<'a>>,
    },
    /// `old` is the key (`K`) or the whole old row (`O`, REPLICA IDENTITY FULL), when sent.
    Update {
        relation: u32,
        old: Option<(bool, Vec<TupleValue<'a>>)>,
        new: Vec<TupleValue<'a>>,
    },
    /// `old.0` is true when `old` is the whole row rather than the key.
    Delete {
        relation: u32,
        old: (bool, Vec<TupleValue<'a>>),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    Message {
        transactional: bool,
        lsn: u64,
        prefix: &'a str,
        content: &'a [u8],
    },
}

struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn need(&self, n: usize) -> Result<(), Malformed> {
        if self.data.len() < n {
            Err(Malformed(self.what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        self.need(1)?;
        Ok(self.data.get_u8())
    }
    fn i16(&mut self) -> Result<i16, Malformed> {
        self.need(2)?;
        Ok(self.data.get_i16())
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        self.need(4)?;
        Ok(self.data.get_u32())
    }
    fn i32(&mut self) -> Result<i32, Malformed> {
        self.need(4)?;
        Ok(self.data.get_i32())
    }
    fn u64(&mut self) -> Result<u64, Malformed> {
        self.need(8)?;
        Ok(self.data.get_u64())
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        self.need(8)?;
        Ok(self.data.get_i64())
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        self.need(n)?;
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn cstr(&mut self) -> Result<&'a str, Malformed> {
        let end = self
            .data
            .iter()
            .position(|&b| b == 0)
            .ok_or(Malformed(self.what))?;
        let text = std::str::from_utf8(&self.data[..end]).map_err(|_| Malformed(self.what))?;
        self.data = &self.data[end + 1..];
        Ok(text)
    }
    fn tuple(&mut self) -> Result<Vec<TupleValue<'a>>, Malformed> {
        let count = self.i16()?;
        let mut values = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            values.push(match self.u8()? {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::UnchangedToast,
                b't' => {
                    let len = self.u32()? as usize;
                    TupleValue::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.u32()? as usize;
                    TupleValue::Binary(self.bytes(len)?)
                }
                _ => return Err(Malformed(self.what)),
            });
        }
        Ok(values)
    }
}

impl<'a> Reader<'a> {
    fn relation(&mut self) -> Result<Relation, Malformed> {
        let oid = self.u32()?;
        let namespace = self.cstr()?.to_string();
        let name = self.cstr()?.to_string();
        let replica_identity = self.u8()?;
        let count = self.i16()?;
        let mut columns = Vec::with_capacity(count.max(0) as usize);
        for _ in 0..count {
            let flags = self.u8()?;
            columns.push(RelationColumn {
                key: flags & 1 != 0,
                name: self.cstr()?.to_string(),
                type_oid: self.u32()?,
                type_modifier: self.i32()?,
            });
        }
        Ok(Relation {
            oid,
            namespace,
            name,
            replica_identity,
            columns,
        })
    }

    /// An Update: the old key (`K`) or whole old row (`O`) when sent, then the new row.
    fn update(&mut self) -> Result<Message<'a>, Malformed> {
        let relation = self.u32()?;
        let mut old = None;
        let mut kind = self.u8()?;
        if kind == b'K' || kind == b'O' {
            old = Some((kind == b'O', self.tuple()?));
            kind = self.u8()?;
        }
        if kind != b'N' {
            return Err(Malformed(self.what));
        }
        Ok(Message::Update {
            relation,
            old,
            new: self.tuple()?,
        })
    }

    fn truncate(&mut self) -> Result<Message<'a>, Malformed> {
        let count = self.u32()?;
        let options = self.u8()?;
        let mut relations = Vec::with_capacity(count.min(10_000) as usize);
        for _ in 0..count {
            relations.push(self.u32()?);
        }
        Ok(Message::Truncate {
            relations,
            cascade: options & 1 != 0,
            restart_identity: options & 2 != 0,
        })
    }
}

/// Parses one pgoutput message.
pub fn parse(data: &[u8]) -> Result<Message<'_>, Malformed> {
    let Some((&tag, rest)) = data.split_first() else {
        return Err(Malformed("empty"));
    };
    let what = match tag {
        b'B' => "Begin",
        b'C' => "Commit",
        b'O' => "Origin",
        b'R' => "Relation",
        b'Y' => "Type",
        b'I' => "Insert",
        b'U' => "Update",
        b'D' => "Delete",
        b'T' => "Truncate",
        b'M' => "Message",
        _ => "unknown",
    };
    let mut r = Reader { data: rest, what };
    Ok(match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64()?,
            commit_ts: r.i64()?,
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            Message::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                commit_ts: r.i64()?,
            }
        }
        b'O' => Message::Origin,
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type {
            oid: r.u32()?,
            namespace: r.cstr()?.to_string(),
            name: r.cstr()?.to_string(),
        },
        b'I' => {
            let relation = r.u32()?;
            if r.u8()? != b'N' {
                return Err(Malformed(what));
            }
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => r.update()?,
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            if kind != b'K' && kind != b'O' {
                return Err(Malformed(what));
            }
            Message::Delete {
                relation,
                old: (kind == b'O', r.tuple()?),
            }
        }
        b'T' => r.truncate()?,
        b'M' => {
            let transactional = r.u8()? & 1 != 0;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let len = r.u32()? as usize;
            Message::Message {
                transactional,
                lsn,
                prefix,
                content: r.bytes(len)?,
            }
        }
        _ => return Err(Malformed(what)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_and_update_with_old_row() {
        let mut rel = vec![b'R'];
        rel.extend_from_slice(&16385u32.to_be_bytes());
        rel.extend_from_slice(b"public\0accounts\0f");
        rel.extend_from_slice(&2i16.to_be_bytes());
        rel.push(1);
        rel.extend_from_slice(b"id\0");
        rel.extend_from_slice(&20u32.to_be_bytes());
        rel.extend_from_slice(&(-1i32).to_be_bytes());
        rel.push(0);
        rel.extend_from_slice(b"note\0");
        rel.extend_from_slice(&25u32.to_be_bytes());
        rel.extend_from_slice(&(-1i32).to_be_bytes());
        let Message::Relation(relation) = parse(&rel).unwrap() else {
            panic!()
        };
        assert_eq!(relation.name, "accounts");
        assert!(relation.columns[0].key && !relation.columns[1].key);
        assert_eq!(relation.replica_identity, b'f');

        let mut update = vec![b'U'];
        update.extend_from_slice(&16385u32.to_be_bytes());
        update.push(b'O');
        update.extend_from_slice(&2i16.to_be_bytes());
        update.extend_from_slice(b"t\0\0\0\x017n");
        update.push(b'N');
        update.extend_from_slice(&2i16.to_be_bytes());
        update.extend_from_slice(b"t\0\0\0\x017u");
        let Message::Update {
            old: Some((true, old)),
            new,
            ..
        } = parse(&update).unwrap()
        else {
            panic!()
        };
        assert_eq!(old, [TupleValue::Text(b"7"), TupleValue::Null]);
        assert_eq!(new, [TupleValue::Text(b"7"), TupleValue::UnchangedToast]);
    }

    #[test]
    fn truncated_messages_are_errors() {
        assert!(parse(b"B\0\0").is_err());
        assert!(parse(b"I\0\0\0\x01N\0\x01t\0\0\0\x09ab").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"Z").is_err());
    }
}
