//! Values read over SQL for snapshot chunks: the TABLE_MAP type and metadata a catalog column
//! would have (so the stream's mapping code describes it), binary-protocol values turned into
//! the row-image decoder's values, and primary-key values saved and bound back into `WHERE`.

use crate::decoder::{CivilTime, ColumnDecoder};
use headwater_contract::avro::{Unscaled, Value};
use headwater_contract::backfill::KeyPart;
use mysql_common::constants::ColumnType;
use std::borrow::Cow;

/// How a key column's saved value goes back into the `WHERE` clause.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyParam {
    Signed,
    Unsigned,
    /// Compared as a decimal: a string would be compared as a double.
    Decimal(u8, u8),
    Plain,
}

/// The binlog type and metadata bytes a column of this `information_schema` description has in
/// TABLE_MAP events.
pub(crate) struct BinlogSpec {
    pub(crate) column_type: ColumnType,
    pub(crate) meta: Vec<u8>,
}

impl BinlogSpec {
    pub(crate) fn of(
        data_type: &str,
        column_type: &str,
        octets: u64,
        precision: u64,
        scale: u64,
        fsp: u64,
    ) -> Option<BinlogSpec> {
        use ColumnType as T;
        let length = |n: u64| (n.min(u64::from(u16::MAX)) as u16).to_le_bytes().to_vec();
        // CHAR/BINARY: the real type and the length share two bytes.
        let fixed = |n: u64| {
            let n = n.min(1023) as u16;
            let high = (((n >> 8) & 3) << 4) as u8 ^ 0x30;
            vec![0xCE | high, (n & 0xFF) as u8]
        };
        let (column_type_code, meta) = match data_type {
            "tinyint" | "bool" | "boolean" => (T::MYSQL_TYPE_TINY, vec![]),
            "smallint" => (T::MYSQL_TYPE_SHORT, vec![]),
            "mediumint" => (T::MYSQL_TYPE_INT24, vec![]),
            "int" | "integer" => (T::MYSQL_TYPE_LONG, vec![]),
            "bigint" => (T::MYSQL_TYPE_LONGLONG, vec![]),
            "float" => (T::MYSQL_TYPE_FLOAT, vec![4]),
            "double" | "real" | "double precision" => (T::MYSQL_TYPE_DOUBLE, vec![8]),
            "decimal" | "numeric" => (T::MYSQL_TYPE_NEWDECIMAL, vec![precision as u8, scale as u8]),
            "year" => (T::MYSQL_TYPE_YEAR, vec![]),
            "date" => (T::MYSQL_TYPE_DATE, vec![]),
            "time" => (T::MYSQL_TYPE_TIME2, vec![fsp as u8]),
            "datetime" => (T::MYSQL_TYPE_DATETIME2, vec![fsp as u8]),
            "timestamp" => (T::MYSQL_TYPE_TIMESTAMP2, vec![fsp as u8]),
            "varchar" | "varbinary" => (T::MYSQL_TYPE_VARCHAR, length(octets)),
            "char" | "binary" => (T::MYSQL_TYPE_STRING, fixed(octets)),
            "uuid" => (T::MYSQL_TYPE_STRING, fixed(16)),
            "inet6" => (T::MYSQL_TYPE_STRING, fixed(16)),
            "inet4" => (T::MYSQL_TYPE_STRING, fixed(4)),
            "enum" => {
                let count = parse_labels(column_type).len();
                (
                    T::MYSQL_TYPE_ENUM,
                    vec![0xF7, if count > 255 { 2 } else { 1 }],
                )
            }
            "set" => {
                let count = parse_labels(column_type).len();
                let bytes = match count.div_ceil(8) {
                    0 | 1 => 1,
                    2 => 2,
                    3 => 3,
                    4 => 4,
                    _ => 8,
                };
                (T::MYSQL_TYPE_SET, vec![0xF8, bytes])
            }
            "tinyblob" | "tinytext" => (T::MYSQL_TYPE_BLOB, vec![1]),
            "blob" | "text" => (T::MYSQL_TYPE_BLOB, vec![2]),
            "mediumblob" | "mediumtext" => (T::MYSQL_TYPE_BLOB, vec![3]),
            "longblob" | "longtext" | "json" => (T::MYSQL_TYPE_BLOB, vec![4]),
            "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
            | "multipolygon" | "geometrycollection" => (T::MYSQL_TYPE_GEOMETRY, vec![4]),
            "bit" => (
                T::MYSQL_TYPE_BIT,
                vec![(precision % 8) as u8, (precision / 8) as u8],
            ),
            _ => return None,
        };
        Some(BinlogSpec {
            column_type: column_type_code,
            meta,
        })
    }
}

/// The labels of `enum('a','b')` / `set('x','y')` as `information_schema` spells them.
pub(crate) fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let inner = &column_type[open + 1..column_type.rfind(')').unwrap_or(column_type.len())];
    let mut labels = Vec::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(next) = chars.next() {
                        label.push(next);
                    }
                }
                other => label.push(other),
            }
        }
        labels.push(label);
    }
    labels
}

pub(crate) fn key_param(decoder: &ColumnDecoder) -> KeyParam {
    match decoder {
        ColumnDecoder::Tiny { unsigned }
        | ColumnDecoder::Short { unsigned }
        | ColumnDecoder::Int24 { unsigned }
        | ColumnDecoder::Long { unsigned }
        | ColumnDecoder::LongLong { unsigned } => {
            if *unsigned {
                KeyParam::Unsigned
            } else {
                KeyParam::Signed
            }
        }
        ColumnDecoder::NewDecimal { precision, scale } => KeyParam::Decimal(*precision, *scale),
        _ => KeyParam::Plain,
    }
}

pub(crate) fn placeholder(kind: KeyParam) -> String {
    match kind {
        KeyParam::Decimal(p, s) => format!("CAST(? AS DECIMAL({p},{s}))"),
        _ => "?".into(),
    }
}

pub(crate) fn param(kind: KeyParam, part: &KeyPart) -> mysql_async::Value {
    let bytes = part.to_bytes();
    let text = std::str::from_utf8(&bytes).unwrap_or("");
    match kind {
        KeyParam::Signed => text.parse::<i64>().map_or(
            mysql_async::Value::Bytes(bytes.clone()),
            mysql_async::Value::Int,
        ),
        KeyParam::Unsigned => text.parse::<u64>().map_or(
            mysql_async::Value::Bytes(bytes.clone()),
            mysql_async::Value::UInt,
        ),
        _ => mysql_async::Value::Bytes(bytes),
    }
}

/// A key value as it is saved to continue after it.
pub(crate) fn key_part(value: &mysql_async::Value) -> KeyPart {
    use mysql_async::Value as V;
    match value {
        V::Bytes(bytes) => KeyPart::from_bytes(bytes),
        V::Int(n) => KeyPart::Text(n.to_string()),
        V::UInt(n) => KeyPart::Text(n.to_string()),
        V::Float(x) => KeyPart::Text(format!("{x:?}")),
        V::Double(x) => KeyPart::Text(format!("{x:?}")),
        V::Date(y, mo, d, h, mi, s, us) => KeyPart::Text(format!(
            "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        )),
        V::Time(negative, days, h, mi, s, us) => KeyPart::Text(format!(
            "{}{}:{mi:02}:{s:02}.{us:06}",
            if *negative { "-" } else { "" },
            u32::from(*h) + days * 24
        )),
        V::NULL => KeyPart::Text(String::new()),
    }
}

/// A value from the binary protocol as the row-image decoder would have produced it.
pub(crate) fn convert(
    decoder: &ColumnDecoder,
    value: &mysql_async::Value,
) -> Result<Value<'static>, String> {
    use mysql_async::Value as V;
    use ColumnDecoder as D;
    if matches!(value, V::NULL) {
        return Ok(Value::Null);
    }
    Ok(match decoder {
        D::Tiny { .. } | D::Short { .. } | D::Int24 { .. } | D::Year => {
            Value::Int(integer(value)? as i32)
        }
        D::Long { unsigned } => {
            let n = integer(value)?;
            if *unsigned {
                Value::Long(n as i64)
            } else {
                Value::Int(n as i32)
            }
        }
        D::LongLong { unsigned } => {
            let n = integer(value)?;
            if *unsigned {
                Value::Decimal(crate::decoder::unsigned_decimal(n as u64))
            } else {
                Value::Long(n as i64)
            }
        }
        D::Float => match value {
            V::Float(x) => Value::Float(*x),
            V::Double(x) => Value::Float(*x as f32),
            other => return Err(format!("expected a FLOAT, got {other:?}")),
        },
        D::Double => match value {
            V::Double(x) => Value::Double(*x),
            V::Float(x) => Value::Double(f64::from(*x)),
            other => return Err(format!("expected a DOUBLE, got {other:?}")),
        },
        D::NewDecimal { scale, .. } => {
            let V::Bytes(text) = value else {
                return Err(format!("expected a DECIMAL, got {value:?}"));
            };
            let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
            Value::Decimal(Unscaled::parse(text, u32::from(*scale)).map_err(|e| e.to_string())?)
        }
        D::Date => match civil(value)? {
            Some(c) => c
                .epoch_micros()
                .map_or(Value::Null, |m| Value::Date((m / 86_400_000_000) as i32)),
            None => Value::Null,
        },
        D::Datetime2 { .. } | D::DatetimeOld | D::Timestamp2 { .. } | D::TimestampOld => {
            match civil(value)? {
                Some(c) => c.epoch_micros().map_or(Value::Null, Value::Micros),
                None => Value::Null,
            }
        }
        D::Time2 { .. } | D::TimeOld => time(value)?,
        D::VarString { text, .. } | D::Blob { text, .. } | D::Char { text, .. } => {
            let V::Bytes(bytes) = value else {
                return Err(format!("expected a string, got {value:?}"));
            };
            crate::decoder::text_value(bytes, *text)
                .map_err(|e| e.0)?
                .into_owned()
        }
        D::Enum { .. } | D::Set { .. } => {
            let V::Bytes(bytes) = value else {
                return Err(format!("expected an ENUM/SET label, got {value:?}"));
            };
            Value::Text(Cow::Owned(String::from_utf8_lossy(bytes).into_owned()))
        }
        D::Bit {
            boolean,
            bytes: width,
        } => bit(value, *boolean, *width)?,
        D::Address { kind, .. } => address(value, *kind)?,
    })
}

/// An integer of any width, as the binary protocol sends it (or as text).
fn integer(value: &mysql_async::Value) -> Result<i128, String> {
    use mysql_async::Value as V;
    match value {
        V::Int(n) => Ok(i128::from(*n)),
        V::UInt(n) => Ok(i128::from(*n)),
        V::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(|| format!("expected an integer, got {b:?}")),
        other => Err(format!("expected an integer, got {other:?}")),
    }
}

/// A TIME value in microseconds (signed; beyond 24 hours as MySQL allows).
fn time(value: &mysql_async::Value) -> Result<Value<'static>, String> {
    let mysql_async::Value::Time(negative, days, h, m, s, us) = value else {
        return Err(format!("expected a TIME, got {value:?}"));
    };
    let total =
        ((i64::from(*days) * 24 + i64::from(*h)) * 3600 + i64::from(*m) * 60 + i64::from(*s))
            * 1_000_000
            + i64::from(*us);
    Ok(Value::Micros(if *negative { -total } else { total }))
}

/// A BIT(n) value: a boolean for BIT(1) read as one, else its bytes.
fn bit(value: &mysql_async::Value, boolean: bool, width: u8) -> Result<Value<'static>, String> {
    use mysql_async::Value as V;
    let raw: Vec<u8> = match value {
        V::Bytes(b) => b.clone(),
        V::Int(n) => n.to_be_bytes()[8 - usize::from(width).min(8)..].to_vec(),
        V::UInt(n) => n.to_be_bytes()[8 - usize::from(width).min(8)..].to_vec(),
        other => return Err(format!("expected BIT bytes, got {other:?}")),
    };
    Ok(if boolean {
        Value::Boolean(raw.iter().any(|&b| b != 0))
    } else {
        Value::Bytes(Cow::Owned(raw))
    })
}

/// A MariaDB UUID/INET6/INET4 value, printed the way the row-image decoder prints it.
fn address(
    value: &mysql_async::Value,
    kind: crate::decoder::AddressKind,
) -> Result<Value<'static>, String> {
    let mysql_async::Value::Bytes(bytes) = value else {
        return Err(format!("expected an address, got {value:?}"));
    };
    let text = String::from_utf8_lossy(bytes);
    let normalized = match kind {
        crate::decoder::AddressKind::Uuid => text.to_ascii_lowercase(),
        crate::decoder::AddressKind::Inet6 => text
            .parse::<std::net::Ipv6Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| text.into_owned()),
        crate::decoder::AddressKind::Inet4 => text
            .parse::<std::net::Ipv4Addr>()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| text.into_owned()),
    };
    Ok(Value::Text(Cow::Owned(normalized)))
}

/// A DATE/DATETIME/TIMESTAMP value; `None` for the zero date.
fn civil(value: &mysql_async::Value) -> Result<Option<CivilTime>, String> {
    match value {
        mysql_async::Value::Date(y, mo, d, h, mi, s, us) => Ok(Some(CivilTime {
            year: u32::from(*y),
            month: u32::from(*mo),
            day: u32::from(*d),
            hour: u32::from(*h),
            minute: u32::from(*mi),
            second: u32::from(*s),
            micros: *us,
        })),
        mysql_async::Value::Bytes(b) if b.is_empty() => Ok(None),
        other => Err(format!("expected a date, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::ColumnDecoder;

    #[test]
    fn enum_labels_are_read_with_their_quotes_undone() {
        assert_eq!(
            parse_labels("enum('a','it''s','x,y')"),
            ["a", "it's", "x,y"]
        );
        assert!(parse_labels("int(11)").is_empty());
    }

    #[test]
    fn char_lengths_round_trip_through_the_packed_metadata() {
        for n in [1u64, 16, 255, 256, 600, 1020] {
            let spec = BinlogSpec::of("char", "char(10)", n, 0, 0, 0).unwrap();
            let (b0, b1) = (spec.meta[0], spec.meta[1]);
            let decoded = ((u16::from(b0 & 0x30) ^ 0x30) << 4) | u16::from(b1);
            assert_eq!(u64::from(decoded), n);
        }
    }

    #[test]
    fn binary_protocol_values_match_row_image_values() {
        use mysql_async::Value as V;
        assert_eq!(
            convert(&ColumnDecoder::Date, &V::Date(0, 0, 0, 0, 0, 0, 0)).unwrap(),
            Value::Null
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Time2 { fsp: 0 },
                &V::Time(true, 34, 22, 59, 59, 0)
            )
            .unwrap(),
            Value::Micros(-((838 * 3600 + 59 * 60 + 59) * 1_000_000))
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Long { unsigned: true },
                &V::UInt(4_000_000_000)
            )
            .unwrap(),
            Value::Long(4_000_000_000)
        );
        assert_eq!(
            convert(
                &ColumnDecoder::Bit {
                    bytes: 1,
                    boolean: true
                },
                &V::Bytes(vec![1])
            )
            .unwrap(),
            Value::Boolean(true)
        );
        assert!(matches!(
            param(KeyParam::Signed, &KeyPart::Text("-5".into())),
            V::Int(-5)
        ));
    }
}
