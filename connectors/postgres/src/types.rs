//! PostgreSQL types: which Avro type each becomes (`docs/types.md`) and how its text output
//! (with the session pinned to UTC, ISO dates, hex bytea, full float precision, ISO 8601
//! intervals) turns into a value.

use headwater_contract::avro::{days_from_civil, Unscaled, Value};
use headwater_contract::FieldType;
use std::borrow::Cow;

/// How a column's text is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    /// `numeric(p,s)`; `None` for unconstrained `numeric`, carried as exact text.
    Numeric(Option<(u32, u32)>),
    /// Carried as its text: `text`, `varchar`, `inet`, `interval`, `money`, … (`kind` says which Avro annotation).
    Text(TextKind),
    Bytea,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Array(Box<PgType>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextKind {
    Plain,
    Json,
    Uuid,
    Enum,
}

impl PgType {
    /// A built-in type by OID, with its type modifier; `None` for types that need the catalog.
    pub fn builtin(oid: u32, typmod: i32) -> Option<PgType> {
        use PgType as T;
        Some(match oid {
            16 => T::Bool,
            17 => T::Bytea,
            21 => T::Int2,
            23 => T::Int4,
            20 | 26 => T::Int8,
            700 => T::Float4,
            701 => T::Float8,
            1700 => T::Numeric(numeric_modifier(typmod)),
            18 | 19 | 25 | 142 | 650 | 774 | 790 | 829 | 869 | 1042 | 1043 | 1186 | 1266 | 1560
            | 1562 => T::Text(TextKind::Plain),
            114 | 3802 => T::Text(TextKind::Json),
            2950 => T::Text(TextKind::Uuid),
            1082 => T::Date,
            1083 => T::Time,
            1114 => T::Timestamp,
            1184 => T::TimestampTz,
            _ => {
                let element = match oid {
                    1000 => 16,
                    1001 => 17,
                    1005 => 21,
                    1007 => 23,
                    1016 => 20,
                    1028 => 26,
                    1021 => 700,
                    1022 => 701,
                    1231 => 1700,
                    1009 => 25,
                    1014 => 1042,
                    1015 => 1043,
                    199 => 114,
                    3807 => 3802,
                    2951 => 2950,
                    1182 => 1082,
                    1183 => 1083,
                    1115 => 1114,
                    1185 => 1184,
                    1187 => 1186,
                    1041 => 869,
                    651 => 650,
                    1040 => 829,
                    _ => return None,
                };
                T::Array(Box::new(PgType::builtin(element, typmod)?))
            }
        })
    }

    pub fn field_type(&self) -> FieldType {
        match self {
            PgType::Bool => FieldType::Boolean,
            PgType::Int2 | PgType::Int4 => FieldType::Int,
            PgType::Int8 => FieldType::Long,
            PgType::Float4 => FieldType::Float,
            PgType::Float8 => FieldType::Double,
            PgType::Numeric(Some((precision, scale))) => FieldType::Decimal {
                precision: *precision,
                scale: *scale,
            },
            PgType::Numeric(None) => FieldType::DecimalString,
            PgType::Text(TextKind::Plain) => FieldType::String,
            PgType::Text(TextKind::Json) => FieldType::Json,
            PgType::Text(TextKind::Uuid) => FieldType::Uuid,
            PgType::Text(TextKind::Enum) => FieldType::Enum,
            PgType::Bytea => FieldType::Bytes,
            PgType::Date => FieldType::Date,
            PgType::Time => FieldType::TimeMicros,
            PgType::Timestamp => FieldType::LocalTimestampMicros,
            PgType::TimestampTz => FieldType::TimestampMicros,
            PgType::Array(element) => FieldType::Array(Box::new(element.field_type())),
        }
    }

    /// Parses the text output of one value. `Null` for values the Avro type cannot hold and the
    /// documentation maps to null (infinite dates and timestamps, `NaN`/`Infinity` in a
    /// constrained `numeric`).
    pub fn parse<'a>(&self, text: &'a str) -> Result<Value<'a>, String> {
        let bad = || {
            format!(
                "`{}` is not a valid {self:?} value",
                text.chars().take(80).collect::<String>()
            )
        };
        Ok(match self {
            PgType::Bool => match text {
                "t" => Value::Boolean(true),
                "f" => Value::Boolean(false),
                _ => return Err(bad()),
            },
            PgType::Int2 | PgType::Int4 => Value::Int(text.parse().map_err(|_| bad())?),
            PgType::Int8 => Value::Long(text.parse().map_err(|_| bad())?),
            PgType::Float4 => Value::Float(parse_float(text).ok_or_else(bad)? as f32),
            PgType::Float8 => Value::Double(parse_float(text).ok_or_else(bad)?),
            PgType::Numeric(Some((_, scale))) => match text {
                "NaN" | "Infinity" | "-Infinity" => Value::Null,
                _ => Value::Decimal(Unscaled::parse(text, *scale).map_err(|e| e.to_string())?),
            },
            PgType::Numeric(None) | PgType::Text(_) => Value::Text(Cow::Borrowed(text)),
            PgType::Bytea => {
                let hex = text.strip_prefix("\\x").ok_or_else(bad)?;
                let mut bytes = Vec::with_capacity(hex.len() / 2);
                for pair in hex.as_bytes().chunks(2) {
                    let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
                    bytes.push(u8::from_str_radix(pair, 16).map_err(|_| bad())?);
                }
                Value::Bytes(Cow::Owned(bytes))
            }
            PgType::Date => match parse_date(text).ok_or_else(bad)? {
                Some(days) => Value::Date(days),
                None => Value::Null,
            },
            PgType::Time => Value::Micros(parse_time(text).ok_or_else(bad)?),
            PgType::Timestamp | PgType::TimestampTz => {
                match parse_timestamp(text).ok_or_else(bad)? {
                    Some(micros) => Value::Micros(micros),
                    None => Value::Null,
                }
            }
            PgType::Array(element) => {
                let mut values = Vec::new();
                for item in parse_array(text).ok_or_else(bad)? {
                    values.push(match item {
                        None => Value::Null,
                        Some(Cow::Borrowed(item)) => element.parse(item)?,
                        // quoted items with escapes are owned: parse, then own the result
                        Some(Cow::Owned(item)) => element.parse(&item)?.into_owned(),
                    });
                }
                Value::Array(values)
            }
        })
    }
}

fn numeric_modifier(typmod: i32) -> Option<(u32, u32)> {
    if typmod < 4 {
        return None;
    }
    let packed = (typmod - 4) as u32;
    Some(((packed >> 16) & 0xFFFF, packed & 0xFFFF))
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => text.parse().ok(),
    }
}

/// `YYYY-MM-DD[ BC]`; `Some(None)` for ±infinity.
fn parse_date(text: &str) -> Option<Option<i32>> {
    if text == "infinity" || text == "-infinity" {
        return Some(None);
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let days = civil_days(text, bc)?;
    Some(Some(i32::try_from(days).ok()?))
}

fn civil_days(date: &str, bc: bool) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    // 1 BC is year 0 in the proleptic calendar
    let year = if bc { 1 - year } else { year };
    Some(days_from_civil(year, month, day))
}

/// `HH:MM:SS[.ffffff]` → microseconds.
fn parse_time(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next()?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: i64 = whole.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // ".5" is 500000 µs: scale the digits up to six places
    let micros: i64 = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .fold(0, |acc, digit| acc * 10 + i64::from(digit - b'0'));
    Some(((hours * 60 + minutes) * 60 + whole) * 1_000_000 + micros)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±HH[:MM[:SS]]][ BC]` → microseconds since the epoch (UTC when
/// an offset is given); `Some(None)` for ±infinity.
fn parse_timestamp(text: &str) -> Option<Option<i64>> {
    if text == "infinity" || text == "-infinity" {
        return Some(None);
    }
    let (text, bc) = match text.strip_suffix(" BC") {
        Some(t) => (t, true),
        None => (text, false),
    };
    let (date, time) = text.split_once(' ')?;
    // an offset starts at the first + or - after the seconds
    let (clock, offset) = match time.find(['+', '-']) {
        Some(i) => (&time[..i], Some(&time[i..])),
        None => (time, None),
    };
    let days = civil_days(date, bc)?;
    let mut micros = days * 86_400_000_000 + parse_time(clock)?;
    if let Some(offset) = offset {
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let mut fields = offset[1..].split(':');
        let hours: i64 = fields.next()?.parse().ok()?;
        let minutes: i64 = fields.next().map_or(Some(0), |m| m.parse().ok())?;
        let seconds: i64 = fields.next().map_or(Some(0), |s| s.parse().ok())?;
        micros -= sign * ((hours * 60 + minutes) * 60 + seconds) * 1_000_000;
    }
    Some(Some(micros))
}

/// A one-dimensional array literal → its items (`None` for NULL). Multi-dimensional arrays are
/// refused (`None`).
fn parse_array(text: &str) -> Option<Vec<Option<Cow<'_, str>>>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let mut items = Vec::new();
    if inner.is_empty() {
        return Some(items);
    }
    let bytes = inner.as_bytes();
    let mut i = 0;
    loop {
        if bytes.get(i) == Some(&b'"') {
            let mut item = String::new();
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'\\' => {
                        let next = inner[i + 1..].chars().next()?;
                        item.push(next);
                        i += 1 + next.len_utf8();
                    }
                    b'"' => {
                        i += 1;
                        break;
                    }
                    _ => {
                        let c = inner[i..].chars().next()?;
                        item.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            items.push(Some(Cow::Owned(item)));
        } else {
            if bytes.get(i) == Some(&b'{') {
                return None; // multi-dimensional
            }
            let end = inner[i..].find(',').map_or(inner.len(), |n| i + n);
            let item = &inner[i..end];
            items.push(if item.eq_ignore_ascii_case("NULL") {
                None
            } else {
                Some(Cow::Borrowed(item))
            });
            i = end;
        }
        match bytes.get(i) {
            None => return Some(items),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(oid: u32, typmod: i32, text: &str) -> Value<'static> {
        PgType::builtin(oid, typmod)
            .expect("built-in")
            .parse(text)
            .expect("parses")
            .into_owned()
    }

    #[test]
    fn numerics_constrained_and_not() {
        let typmod = ((10 << 16) | 2) + 4;
        assert_eq!(
            parse(1700, typmod, "-12.5"),
            Value::Decimal(Unscaled::parse("-12.50", 2).unwrap())
        );
        assert_eq!(parse(1700, typmod, "NaN"), Value::Null);
        assert_eq!(parse(1700, -1, "NaN"), Value::Text("NaN".into()));
        assert_eq!(
            PgType::builtin(1700, -1).unwrap().field_type(),
            FieldType::DecimalString
        );
    }

    #[test]
    fn dates_and_timestamps() {
        assert_eq!(parse(1082, -1, "1970-01-02"), Value::Date(1));
        assert_eq!(
            parse(1082, -1, "0001-01-01 BC"),
            Value::Date(-719_528),
            "1 BC is year 0, a leap year"
        );
        assert_eq!(parse(1082, -1, "infinity"), Value::Null);
        assert_eq!(
            parse(1114, -1, "1970-01-01 00:00:01.5"),
            Value::Micros(1_500_000)
        );
        assert_eq!(parse(1184, -1, "1970-01-01 01:00:00+01"), Value::Micros(0));
        assert_eq!(
            parse(1184, -1, "1970-01-01 00:00:00-05:30"),
            Value::Micros(19_800_000_000)
        );
        assert_eq!(parse(1184, -1, "-infinity"), Value::Null);
        assert_eq!(parse(1083, -1, "24:00:00"), Value::Micros(86_400_000_000));
        assert_eq!(
            parse(1083, -1, "13:45:07.000123"),
            Value::Micros(49_507_000_123)
        );
    }

    #[test]
    fn bytea_floats_booleans() {
        assert_eq!(parse(17, -1, "\\x00ff"), Value::Bytes(vec![0, 255].into()));
        assert_eq!(
            parse(701, -1, "-Infinity"),
            Value::Double(f64::NEG_INFINITY)
        );
        assert_eq!(parse(700, -1, "1.5"), Value::Float(1.5));
        assert_eq!(parse(16, -1, "t"), Value::Boolean(true));
        assert!(PgType::Bool.parse("yes").is_err());
    }

    #[test]
    fn arrays_with_nulls_quotes_and_escapes() {
        assert_eq!(
            parse(
                1009,
                -1,
                r#"{plain,"with space","a\"quote",NULL,"NULL",""}"#
            ),
            Value::Array(vec![
                Value::Text("plain".into()),
                Value::Text("with space".into()),
                Value::Text("a\"quote".into()),
                Value::Null,
                Value::Text("NULL".into()),
                Value::Text("".into()),
            ])
        );
        assert_eq!(
            parse(1007, -1, "{1,-2}"),
            Value::Array(vec![Value::Int(1), Value::Int(-2)])
        );
        assert_eq!(parse(1007, -1, "{}"), Value::Array(vec![]));
        assert!(PgType::builtin(1007, -1)
            .unwrap()
            .parse("{{1,2},{3,4}}")
            .is_err());
    }
}
