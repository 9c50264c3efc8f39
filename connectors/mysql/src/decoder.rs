//! Row image decoding: MySQL/MariaDB binary row format → typed values, straight from the event
//! buffer (no per-value allocation except latin1 text outside ASCII and SET labels).

pub use headwater_contract::avro::days_from_civil;
use headwater_contract::avro::{Unscaled, Value};
use std::borrow::Cow;
use std::sync::Arc;

/// How a text column's bytes are turned into a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Text {
    /// Binary collation: the column is bytes, not text.
    Binary,
    /// utf8mb3, utf8mb4, ascii: validated UTF-8.
    Utf8,
    /// MySQL's latin1, which is Windows-1252.
    Latin1,
}

/// How to read one column of a row image, derived from the TABLE_MAP type and metadata.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnDecoder {
    Tiny {
        unsigned: bool,
    },
    Short {
        unsigned: bool,
    },
    Int24 {
        unsigned: bool,
    },
    Long {
        unsigned: bool,
    },
    LongLong {
        unsigned: bool,
    },
    Float,
    Double,
    NewDecimal {
        precision: u8,
        scale: u8,
    },
    Year,
    Date,
    /// TIME with fractional seconds precision 0–6 (MySQL 5.6+ format).
    Time2 {
        fsp: u8,
    },
    Datetime2 {
        fsp: u8,
    },
    Timestamp2 {
        fsp: u8,
    },
    /// Pre-5.6 formats, still readable in old tables.
    TimeOld,
    DatetimeOld,
    TimestampOld,
    /// VARCHAR / VARBINARY: length prefix of 1 or 2 bytes.
    VarString {
        prefix: u8,
        text: Text,
    },
    /// CHAR / BINARY(n): trailing pad bytes are not stored; BINARY is padded back with 0x00.
    Char {
        prefix: u8,
        max_len: u16,
        text: Text,
    },
    /// BLOB / TEXT (and MariaDB JSON, GEOMETRY): length prefix of 1–4 bytes.
    Blob {
        prefix: u8,
        text: Text,
    },
    Enum {
        size: u8,
        labels: Arc<[String]>,
    },
    Set {
        size: u8,
        labels: Arc<[String]>,
    },
    /// BIT(n): `bytes` big-endian bytes; BIT(1) is a boolean.
    Bit {
        bytes: u8,
        boolean: bool,
    },
    /// MariaDB's UUID, INET6 and INET4 types: fixed binary in the row image (trailing 0x00
    /// bytes not stored), shown in their text form.
    Address {
        prefix: u8,
        kind: AddressKind,
    },
}

/// Which text form an [`ColumnDecoder::Address`] column takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    Uuid,
    Inet6,
    Inet4,
}

impl AddressKind {
    pub fn width(self) -> usize {
        match self {
            AddressKind::Uuid | AddressKind::Inet6 => 16,
            AddressKind::Inet4 => 4,
        }
    }

    fn format(self, bytes: &[u8; 16]) -> String {
        match self {
            AddressKind::Uuid => headwater_contract::position::format_uuid(bytes),
            AddressKind::Inet6 => std::net::Ipv6Addr::from(*bytes).to_string(),
            AddressKind::Inet4 => {
                std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
            }
        }
    }
}

/// A row image that does not match its table map: a defect or a corrupt stream.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

fn short(what: &str) -> DecodeError {
    DecodeError(format!("row image ends in the middle of a {what} value"))
}

/// Reads `n` bytes at `*at`, advancing.
#[inline]
fn take<'a>(buf: &'a [u8], at: &mut usize, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
    let end = at.checked_add(n).ok_or_else(|| short(what))?;
    let bytes = buf.get(*at..end).ok_or_else(|| short(what))?;
    *at = end;
    Ok(bytes)
}

#[inline]
fn le_uint(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

#[inline]
fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
}

/// A calendar date-time as MySQL stores it; invalid and zero dates are representable.
pub(crate) struct CivilTime {
    pub(crate) year: u32,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) micros: u32,
}

impl CivilTime {
    /// Microseconds since the epoch, or `None` for zero or partially-zero dates (documented:
    /// they become NULL, or the epoch in a NOT NULL column).
    pub(crate) fn epoch_micros(&self) -> Option<i64> {
        if self.month == 0 || self.day == 0 || self.month > 12 || self.day > 31 {
            return None;
        }
        let days = days_from_civil(i64::from(self.year), self.month, self.day);
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        Some(seconds * 1_000_000 + i64::from(self.micros))
    }
}

/// Fractional seconds stored after the integer part: (fsp+1)/2 big-endian bytes.
fn read_fraction(buf: &[u8], at: &mut usize, fsp: u8) -> Result<u32, DecodeError> {
    let n = usize::from(fsp).div_ceil(2);
    let bytes = take(buf, at, n, "fractional seconds")?;
    let raw = be_uint(bytes) as u32;
    Ok(match n {
        0 => 0,
        1 => raw * 10_000,
        2 => raw * 100,
        _ => raw,
    })
}

const LATIN1_HIGH: [char; 32] = [
    '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}', '\u{2021}',
    '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}', '\u{8F}',
    '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}', '\u{2014}',
    '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}', '\u{178}',
];

/// MySQL's latin1 is Windows-1252 (with the five undefined bytes passed through).
pub fn latin1_to_str(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8
        return Cow::Borrowed(std::str::from_utf8(bytes).unwrap_or_default());
    }
    Cow::Owned(
        bytes
            .iter()
            .map(|&b| match b {
                0x80..=0x9F => LATIN1_HIGH[usize::from(b - 0x80)],
                _ => char::from(b),
            })
            .collect(),
    )
}

pub(crate) fn text_value(bytes: &[u8], text: Text) -> Result<Value<'_>, DecodeError> {
    Ok(match text {
        Text::Binary => Value::Bytes(Cow::Borrowed(bytes)),
        Text::Latin1 => Value::Text(latin1_to_str(bytes)),
        Text::Utf8 => Value::Text(Cow::Borrowed(std::str::from_utf8(bytes).map_err(|e| {
            DecodeError(format!(
                "text is not valid UTF-8 for its utf8 character set ({e})"
            ))
        })?)),
    })
}

/// A u64 as an unscaled decimal (cannot overflow 256 bits).
pub(crate) fn unsigned_decimal(v: u64) -> Unscaled {
    let mut d = Unscaled::zero();
    // Multipliers must fit in u32: shift the high half in by two steps of 2^16.
    for (multiplier, addend) in [(1, (v >> 32) as u32), (1 << 16, 0), (1 << 16, v as u32)] {
        let _ = d.push_digits(multiplier, addend);
    }
    d
}

const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Size in bytes of a binary DECIMAL(precision, scale).
pub fn decimal_size(precision: u8, scale: u8) -> usize {
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (frac / 9) * 4 + DIG2BYTES[frac % 9]
}

/// MySQL's binary DECIMAL: groups of 9 digits in 4 big-endian bytes, partial groups in fewer,
/// sign in the top bit of the first byte (set = positive), negative values bit-inverted.
fn decode_decimal(bytes: &[u8], precision: u8, scale: u8) -> Result<Unscaled, DecodeError> {
    let intg = usize::from(precision.saturating_sub(scale));
    let frac = usize::from(scale);
    let Some(&first) = bytes.first() else {
        return Err(short("DECIMAL"));
    };
    let negative = first & 0x80 == 0;
    let mask: u8 = if negative { 0xFF } else { 0x00 };
    let mut scratch = [0u8; 40];
    let len = bytes.len().min(scratch.len());
    for (out, &b) in scratch.iter_mut().zip(&bytes[..len]) {
        *out = b ^ mask;
    }
    scratch[0] ^= 0x80;
    let data = &scratch[..len];
    let mut at = 0;
    let mut value = Unscaled::zero();
    let mut group = |digits: usize, at: &mut usize| -> Result<(), DecodeError> {
        let n = if digits == 9 { 4 } else { DIG2BYTES[digits] };
        if n == 0 {
            return Ok(());
        }
        let raw = be_uint(take(data, at, n, "DECIMAL")?) as u32;
        if raw >= POW10[digits.min(9)] && digits < 9 || raw >= 1_000_000_000 {
            return Err(DecodeError(format!(
                "DECIMAL digit group {raw} does not fit in {digits} digits"
            )));
        }
        value
            .push_digits(POW10[digits], raw)
            .map_err(|_| DecodeError("DECIMAL value exceeds 256 bits".into()))
    };
    group(intg % 9, &mut at)?;
    for _ in 0..intg / 9 {
        group(9, &mut at)?;
    }
    for _ in 0..frac / 9 {
        group(9, &mut at)?;
    }
    group(frac % 9, &mut at)?;
    value.set_negative(negative);
    Ok(value)
}

impl ColumnDecoder {
    /// Decodes the value at `*at` and advances past it.
    pub fn decode<'a>(&'a self, buf: &'a [u8], at: &mut usize) -> Result<Value<'a>, DecodeError> {
        use ColumnDecoder as D;
        Ok(match self {
            D::Tiny { unsigned } => small_int(buf, at, 1, *unsigned, "TINYINT")?,
            D::Short { unsigned } => small_int(buf, at, 2, *unsigned, "SMALLINT")?,
            D::Int24 { unsigned } => small_int(buf, at, 3, *unsigned, "MEDIUMINT")?,
            D::Long { unsigned } => {
                let v = le_uint(take(buf, at, 4, "INT")?) as u32;
                if *unsigned {
                    Value::Long(i64::from(v))
                } else {
                    Value::Int(v as i32)
                }
            }
            D::LongLong { unsigned } => {
                let v = le_uint(take(buf, at, 8, "BIGINT")?);
                if *unsigned {
                    Value::Decimal(unsigned_decimal(v))
                } else {
                    Value::Long(v as i64)
                }
            }
            D::Float => Value::Float(f32::from_bits(le_uint(take(buf, at, 4, "FLOAT")?) as u32)),
            D::Double => Value::Double(f64::from_bits(le_uint(take(buf, at, 8, "DOUBLE")?))),
            D::NewDecimal { precision, scale } => {
                let bytes = take(buf, at, decimal_size(*precision, *scale), "DECIMAL")?;
                Value::Decimal(decode_decimal(bytes, *precision, *scale)?)
            }
            D::Year => {
                let b = take(buf, at, 1, "YEAR")?[0];
                Value::Int(if b == 0 { 0 } else { 1900 + i32::from(b) })
            }
            D::Date => date(le_uint(take(buf, at, 3, "DATE")?) as u32),
            D::Time2 { fsp } => time2(buf, at, *fsp)?,
            D::Datetime2 { fsp } => datetime2(buf, at, *fsp)?,
            D::Timestamp2 { fsp } => timestamp2(buf, at, *fsp)?,
            D::TimeOld => time_old(le_uint(take(buf, at, 3, "TIME")?) as i64),
            D::DatetimeOld => datetime_old(le_uint(take(buf, at, 8, "DATETIME")?)),
            D::TimestampOld => timestamp_old(le_uint(take(buf, at, 4, "TIMESTAMP")?) as i64),
            D::VarString { prefix, text } | D::Blob { prefix, text } => {
                let len = le_uint(take(buf, at, usize::from(*prefix), "length")?) as usize;
                text_value(take(buf, at, len, "string")?, *text)?
            }
            D::Char {
                prefix,
                max_len,
                text,
            } => fixed_char(buf, at, *prefix, *max_len, *text)?,
            D::Enum { size, labels } => {
                enum_label(le_uint(take(buf, at, usize::from(*size), "ENUM")?), labels)?
            }
            D::Set { size, labels } => {
                set_labels(le_uint(take(buf, at, usize::from(*size), "SET")?), labels)
            }
            D::Bit { bytes, boolean } => {
                let raw = take(buf, at, usize::from(*bytes), "BIT")?;
                if *boolean {
                    Value::Boolean(raw.iter().any(|&b| b != 0))
                } else {
                    Value::Bytes(Cow::Borrowed(raw))
                }
            }
            D::Address { prefix, kind } => {
                let len = le_uint(take(buf, at, usize::from(*prefix), "length")?) as usize;
                address(take(buf, at, len, "UUID/INET")?, *kind)?
            }
        })
    }
}

/// TINYINT, SMALLINT and MEDIUMINT: `width` little-endian bytes, sign-extended unless unsigned.
fn small_int(
    buf: &[u8],
    at: &mut usize,
    width: usize,
    unsigned: bool,
    what: &'static str,
) -> Result<Value<'static>, DecodeError> {
    let v = le_uint(take(buf, at, width, what)?);
    let unused_bits = 64 - 8 * width as u32;
    Ok(Value::Int(if unsigned {
        v as i32
    } else {
        ((v << unused_bits) as i64 >> unused_bits) as i32
    }))
}

/// TIMESTAMP(fsp): big-endian seconds and a fraction; all zero is the zero timestamp.
fn timestamp2(buf: &[u8], at: &mut usize, fsp: u8) -> Result<Value<'static>, DecodeError> {
    let seconds = be_uint(take(buf, at, 4, "TIMESTAMP")?) as i64;
    let micros = read_fraction(buf, at, fsp)?;
    Ok(if seconds == 0 && micros == 0 {
        Value::Null // the zero timestamp '0000-00-00 00:00:00'
    } else {
        Value::Micros(seconds * 1_000_000 + i64::from(micros))
    })
}

/// The pre-5.6 TIMESTAMP: little-endian seconds, 0 being the zero timestamp.
fn timestamp_old(seconds: i64) -> Value<'static> {
    if seconds == 0 {
        Value::Null
    } else {
        Value::Micros(seconds * 1_000_000)
    }
}

/// CHAR/BINARY(n): a length-prefixed value; BINARY is stored without its trailing 0x00
/// padding, which is restored.
fn fixed_char<'a>(
    buf: &'a [u8],
    at: &mut usize,
    prefix: u8,
    max_len: u16,
    text: Text,
) -> Result<Value<'a>, DecodeError> {
    let len = le_uint(take(buf, at, usize::from(prefix), "length")?) as usize;
    let bytes = take(buf, at, len, "CHAR")?;
    if text == Text::Binary && len < usize::from(max_len) {
        let mut padded = bytes.to_vec();
        padded.resize(usize::from(max_len), 0);
        Ok(Value::Bytes(Cow::Owned(padded)))
    } else {
        text_value(bytes, text)
    }
}

/// DATE: 3 bytes, day in the low 5 bits, month in the next 4, year above.
fn date(v: u32) -> Value<'static> {
    let (year, month, day) = (v >> 9, (v >> 5) & 15, v & 31);
    let civil = CivilTime {
        year,
        month,
        day,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
    };
    match civil.epoch_micros() {
        Some(micros) => Value::Date((micros / 86_400_000_000) as i32),
        None => Value::Null,
    }
}

/// TIME(fsp) in MySQL 5.6+'s packed format: (integer part << 24) + microseconds, signed as a
/// whole, big-endian.
fn time2(buf: &[u8], at: &mut usize, fsp: u8) -> Result<Value<'static>, DecodeError> {
    let int_part = be_uint(take(buf, at, 3, "TIME")?) as i64 - 0x80_0000;
    let n = usize::from(fsp).div_ceil(2);
    let raw_frac = be_uint(take(buf, at, n, "TIME fraction")?) as i64;
    let packed: i64 = match n {
        0 => int_part << 24,
        1 => {
            let (mut i, mut f) = (int_part, raw_frac);
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x100;
            }
            (i << 24) + f * 10_000
        }
        2 => {
            let (mut i, mut f) = (int_part, raw_frac);
            if i < 0 && f != 0 {
                i += 1;
                f -= 0x1_0000;
            }
            (i << 24) + f * 100
        }
        // fsp 5–6: the six bytes are one big-endian number offset by 2^47
        _ => (((int_part + 0x80_0000) << 24) | raw_frac) - 0x8000_0000_0000,
    };
    let negative = packed < 0;
    let magnitude = packed.unsigned_abs();
    let hms = magnitude >> 24;
    let micros = magnitude & 0xFF_FFFF;
    let hour = (hms >> 12) & 0x3FF;
    let minute = (hms >> 6) & 0x3F;
    let second = hms & 0x3F;
    let total = ((hour * 3600 + minute * 60 + second) * 1_000_000 + micros) as i64;
    Ok(Value::Micros(if negative { -total } else { total }))
}

/// DATETIME(fsp) in MySQL 5.6+'s packed format.
fn datetime2(buf: &[u8], at: &mut usize, fsp: u8) -> Result<Value<'static>, DecodeError> {
    let packed = be_uint(take(buf, at, 5, "DATETIME")?) as i64 - 0x80_0000_0000;
    let micros = read_fraction(buf, at, fsp)?;
    let ymd = (packed >> 17) as u32;
    let ym = ymd >> 5;
    let hms = (packed & 0x1_FFFF) as u32;
    let civil = CivilTime {
        year: ym / 13,
        month: ym % 13,
        day: ymd & 31,
        hour: hms >> 12,
        minute: (hms >> 6) & 63,
        second: hms & 63,
        micros,
    };
    Ok(civil.epoch_micros().map_or(Value::Null, Value::Micros))
}

/// The pre-5.6 TIME: a signed 24-bit HHMMSS number.
fn time_old(v: i64) -> Value<'static> {
    let v = if v & 0x80_0000 != 0 {
        v - 0x100_0000
    } else {
        v
    };
    let (sign, v) = (v.signum(), v.abs());
    Value::Micros(sign * ((v / 10_000) * 3600 + (v / 100 % 100) * 60 + v % 100) * 1_000_000)
}

/// The pre-5.6 DATETIME: the decimal number YYYYMMDDHHMMSS.
fn datetime_old(v: u64) -> Value<'static> {
    let (date, time) = (v / 1_000_000, v % 1_000_000);
    let civil = CivilTime {
        year: (date / 10_000) as u32,
        month: (date / 100 % 100) as u32,
        day: (date % 100) as u32,
        hour: (time / 10_000) as u32,
        minute: (time / 100 % 100) as u32,
        second: (time % 100) as u32,
        micros: 0,
    };
    civil.epoch_micros().map_or(Value::Null, Value::Micros)
}

/// An ENUM's label by its 1-based index.
fn enum_label(index: u64, labels: &[String]) -> Result<Value<'_>, DecodeError> {
    let index = index as usize;
    if index == 0 {
        // MySQL stores '' (index 0) for a value that was invalid on insert.
        return Ok(Value::Text(Cow::Borrowed("")));
    }
    let label = labels.get(index - 1).ok_or_else(|| {
        DecodeError(format!(
            "ENUM index {index} beyond its {} labels",
            labels.len()
        ))
    })?;
    Ok(Value::Text(Cow::Borrowed(label.as_str())))
}

/// A SET's members, comma-separated in definition order, from its bit mask.
fn set_labels(bits: u64, labels: &[String]) -> Value<'static> {
    let mut joined = String::new();
    for (i, label) in labels.iter().enumerate().take(64) {
        if bits & (1 << i) != 0 {
            if !joined.is_empty() {
                joined.push(',');
            }
            joined.push_str(label);
        }
    }
    Value::Text(Cow::Owned(joined))
}

/// MariaDB's UUID and INET4/INET6 columns, in their text forms.
fn address(raw: &[u8], kind: AddressKind) -> Result<Value<'static>, DecodeError> {
    let len = raw.len();
    if len > kind.width() {
        return Err(DecodeError(format!(
            "{kind:?} value of {len} bytes, expected at most {}",
            kind.width()
        )));
    }
    let mut padded = [0u8; 16];
    padded[..len].copy_from_slice(raw);
    Ok(Value::Text(Cow::Owned(kind.format(&padded))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(decoder: ColumnDecoder, bytes: &[u8]) -> Value<'static> {
        let mut at = 0;
        let value = decoder.decode(bytes, &mut at).unwrap().into_owned();
        assert_eq!(
            at,
            bytes.len(),
            "the decoder must consume exactly the value"
        );
        value
    }

    fn dec(text: &str, scale: u32) -> Value<'static> {
        Value::Decimal(Unscaled::parse(text, scale).unwrap())
    }

    #[test]
    fn signed_mediumint_is_sign_extended() {
        assert_eq!(
            decode(
                ColumnDecoder::Int24 { unsigned: false },
                &[0x00, 0x00, 0x80]
            ),
            Value::Int(-8_388_608)
        );
        assert_eq!(
            decode(
                ColumnDecoder::Int24 { unsigned: false },
                &[0xff, 0xff, 0xff]
            ),
            Value::Int(-1)
        );
        assert_eq!(
            decode(ColumnDecoder::Int24 { unsigned: true }, &[0xff, 0xff, 0xff]),
            Value::Int(16_777_215)
        );
    }

    #[test]
    fn unsigned_bigint_becomes_an_exact_decimal() {
        let max = u64::MAX.to_le_bytes();
        assert_eq!(
            decode(ColumnDecoder::LongLong { unsigned: true }, &max),
            dec("18446744073709551615", 0)
        );
        assert_eq!(
            decode(ColumnDecoder::LongLong { unsigned: false }, &max),
            Value::Long(-1)
        );
    }

    #[test]
    fn year_zero_stays_zero() {
        assert_eq!(decode(ColumnDecoder::Year, &[0]), Value::Int(0));
        assert_eq!(decode(ColumnDecoder::Year, &[155]), Value::Int(2055));
    }

    #[test]
    fn decimals_decode_from_mysql_binary_format() {
        // DECIMAL(10,2) 1234567.89: intg 8 → 4 bytes; frac 2 → 1 byte; sign bit set
        let positive = [0x80, 0x12, 0xD6, 0x87, 0x59];
        assert_eq!(
            decode(
                ColumnDecoder::NewDecimal {
                    precision: 10,
                    scale: 2
                },
                &positive
            ),
            dec("1234567.89", 2)
        );
        let negative: Vec<u8> = positive.iter().map(|b| !b).collect();
        assert_eq!(
            decode(
                ColumnDecoder::NewDecimal {
                    precision: 10,
                    scale: 2
                },
                &negative
            ),
            dec("-1234567.89", 2)
        );
        assert_eq!(decimal_size(65, 30), 30);
        assert_eq!(decimal_size(10, 2), 5);
    }

    #[test]
    fn datetime2_with_microseconds() {
        // 2024-02-29 13:45:07.123456 with fsp 6
        let ym = 2024 * 13 + 2;
        let ymd = (ym << 5) | 29;
        let hms = (13 << 12) | (45 << 6) | 7;
        let packed: u64 = ((ymd << 17) | hms) + 0x80_0000_0000;
        let mut bytes = packed.to_be_bytes()[3..].to_vec();
        bytes.extend_from_slice(&123_456u32.to_be_bytes()[1..]);
        let expected =
            (days_from_civil(2024, 2, 29) * 86_400 + 13 * 3600 + 45 * 60 + 7) * 1_000_000 + 123_456;
        assert_eq!(
            decode(ColumnDecoder::Datetime2 { fsp: 6 }, &bytes),
            Value::Micros(expected)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1, 1, 1), -719_162);
    }

    #[test]
    fn zero_dates_are_null() {
        assert_eq!(decode(ColumnDecoder::Date, &[0, 0, 0]), Value::Null);
        assert_eq!(
            decode(ColumnDecoder::Timestamp2 { fsp: 0 }, &[0, 0, 0, 0]),
            Value::Null
        );
    }

    #[test]
    fn time2_handles_negative_and_long_values() {
        // Encodes exactly as MySQL's my_time_packed_to_binary does.
        fn time2(fsp: u8, negative: bool, h: i64, m: i64, s: i64, frac: i64) -> Vec<u8> {
            let hms = (h << 12) | (m << 6) | s;
            let mut packed = (hms << 24) + frac;
            if negative {
                packed = -packed;
            }
            let int_part = packed >> 24;
            let frac_part = packed % (1 << 24); // C's truncating remainder
            let mut out = (int_part + 0x80_0000).to_be_bytes()[5..].to_vec();
            match usize::from(fsp).div_ceil(2) {
                0 => {}
                1 => out.push((frac_part / 10_000) as i8 as u8),
                2 => out.extend_from_slice(&((frac_part / 100) as i16).to_be_bytes()),
                _ => out = (packed + 0x8000_0000_0000).to_be_bytes()[2..].to_vec(),
            }
            out
        }
        let micros = |h: i64, m: i64, s: i64, f: i64| ((h * 3600 + m * 60 + s) * 1_000_000) + f;
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 0 },
                &time2(0, false, 838, 59, 59, 0)
            ),
            Value::Micros(micros(838, 59, 59, 0))
        );
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 0 },
                &time2(0, true, 838, 59, 59, 0)
            ),
            Value::Micros(-micros(838, 59, 59, 0))
        );
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 6 },
                &time2(6, true, 1, 2, 3, 500_000)
            ),
            Value::Micros(-micros(1, 2, 3, 500_000))
        );
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 6 },
                &time2(6, false, 25, 0, 0, 1)
            ),
            Value::Micros(micros(25, 0, 0, 1))
        );
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 2 },
                &time2(2, true, 0, 0, 1, 250_000)
            ),
            Value::Micros(-1_250_000)
        );
        assert_eq!(
            decode(
                ColumnDecoder::Time2 { fsp: 4 },
                &time2(4, false, 10, 20, 30, 123_400)
            ),
            Value::Micros(micros(10, 20, 30, 123_400))
        );
    }

    #[test]
    fn latin1_is_windows_1252() {
        assert_eq!(latin1_to_str(b"caf\xe9 \x80"), "café €");
        assert!(matches!(latin1_to_str(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn binary_char_is_padded_back() {
        let decoder = ColumnDecoder::Char {
            prefix: 1,
            max_len: 4,
            text: Text::Binary,
        };
        assert_eq!(
            decode(decoder, &[2, 0xAB, 0xCD]),
            Value::Bytes(Cow::Owned(vec![0xAB, 0xCD, 0, 0]))
        );
    }

    #[test]
    fn enum_and_set_decode_to_labels() {
        let labels: Arc<[String]> =
            vec!["red".to_string(), "green".to_string(), "blue".to_string()].into();
        assert_eq!(
            decode(
                ColumnDecoder::Enum {
                    size: 1,
                    labels: labels.clone()
                },
                &[2]
            ),
            Value::Text("green".into())
        );
        assert_eq!(
            decode(
                ColumnDecoder::Set {
                    size: 1,
                    labels: labels.clone()
                },
                &[0b101]
            ),
            Value::Text("red,blue".into())
        );
        assert_eq!(
            decode(ColumnDecoder::Set { size: 1, labels }, &[0]),
            Value::Text("".into())
        );
    }

    #[test]
    fn mariadb_address_types_restore_their_padding_and_text_form() {
        let uuid = ColumnDecoder::Address {
            prefix: 1,
            kind: AddressKind::Uuid,
        };
        let mut bytes = vec![15u8];
        bytes.extend_from_slice(&[
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40,
        ]);
        assert_eq!(
            decode(uuid, &bytes),
            Value::Text("123e4567-e89b-12d3-a456-426614174000".into())
        );
        let inet6 = ColumnDecoder::Address {
            prefix: 1,
            kind: AddressKind::Inet6,
        };
        let mut bytes = vec![16u8, 0x20, 0x01, 0x0d, 0xb8];
        bytes.extend_from_slice(&[0; 12]);
        assert_eq!(decode(inet6, &bytes), Value::Text("2001:db8::".into()));
        let inet4 = ColumnDecoder::Address {
            prefix: 1,
            kind: AddressKind::Inet4,
        };
        assert_eq!(
            decode(inet4, &[3, 10, 0, 0]),
            Value::Text("10.0.0.0".into())
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut at = 0;
        assert!(ColumnDecoder::LongLong { unsigned: false }
            .decode(&[1, 2, 3], &mut at)
            .is_err());
        let mut at = 0;
        assert!(ColumnDecoder::Blob {
            prefix: 2,
            text: Text::Binary
        }
        .decode(&[0xff, 0xff, 1], &mut at)
        .is_err());
    }
}
