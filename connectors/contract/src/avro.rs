//! Avro binary encoding written straight into a reused buffer: the hot path from a decoded row
//! image to Avro bytes allocates nothing per value.

use crate::error::ConnectorError;
use crate::schema::{FieldType, TableSchema};
use std::borrow::Cow;

/// Appends a `long` (zig-zag varint).
#[inline]
pub fn put_long(buf: &mut Vec<u8>, value: i64) {
    let mut n = ((value << 1) ^ (value >> 63)) as u64;
    while n >= 0x80 {
        buf.push((n as u8) | 0x80);
        n >>= 7;
    }
    buf.push(n as u8);
}

/// Appends an `int`; the encoding is the same varint as `long`.
#[inline]
pub fn put_int(buf: &mut Vec<u8>, value: i32) {
    put_long(buf, i64::from(value))
}

#[inline]
pub fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    put_long(buf, bytes.len() as i64);
    buf.extend_from_slice(bytes);
}

#[inline]
pub fn put_str(buf: &mut Vec<u8>, text: &str) {
    put_bytes(buf, text.as_bytes())
}

#[inline]
pub fn put_bool(buf: &mut Vec<u8>, value: bool) {
    buf.push(u8::from(value));
}

#[inline]
pub fn put_float(buf: &mut Vec<u8>, value: f32) {
    buf.extend_from_slice(&value.to_le_bytes());
}

#[inline]
pub fn put_double(buf: &mut Vec<u8>, value: f64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// Appends the branch index of a union.
#[inline]
pub fn put_union_branch(buf: &mut Vec<u8>, branch: i64) {
    put_long(buf, branch)
}

/// Appends `["null", string]`.
pub fn put_optional_str(buf: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => put_union_branch(buf, 0),
        Some(text) => {
            put_union_branch(buf, 1);
            put_str(buf, text);
        }
    }
}

/// Appends `["null", long]`.
pub fn put_optional_long(buf: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => put_union_branch(buf, 0),
        Some(value) => {
            put_union_branch(buf, 1);
            put_long(buf, value);
        }
    }
}

/// An unscaled decimal as big-endian two's complement, built without heap allocation.
/// 256 bits hold MySQL's widest `DECIMAL(65)` and PostgreSQL's declared `numeric` up to 76 digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unscaled {
    /// Magnitude in little-endian 32-bit limbs.
    limbs: [u32; 8],
    negative: bool,
}

/// A decimal that does not fit in 256 bits.
#[derive(Debug, thiserror::Error)]
#[error("decimal value does not fit in 256 bits")]
pub struct DecimalOverflow;

impl Unscaled {
    pub fn zero() -> Self {
        Unscaled {
            limbs: [0; 8],
            negative: false,
        }
    }

    pub fn set_negative(&mut self, negative: bool) {
        self.negative = negative;
    }

    /// `self = self * multiplier + addend`: feeds the next group of decimal digits.
    pub fn push_digits(&mut self, multiplier: u32, addend: u32) -> Result<(), DecimalOverflow> {
        let mut carry = u64::from(addend);
        for limb in &mut self.limbs {
            let product = u64::from(*limb) * u64::from(multiplier) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        // Keep the top bit clear so the two's-complement form stays in 32 bytes.
        if carry != 0 || self.limbs[7] & 0x8000_0000 != 0 {
            return Err(DecimalOverflow);
        }
        Ok(())
    }

    /// Parses `[-+]digits[.digits]`, scaling to exactly `scale` fractional digits (more
    /// fractional digits than `scale` are an error, never silently rounded).
    pub fn parse(text: &str, scale: u32) -> Result<Self, ParseDecimalError> {
        let bad = || ParseDecimalError(text.to_string(), scale);
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if frac_part.len() > scale as usize {
            return Err(bad());
        }
        let mut value = Unscaled::zero();
        for byte in int_part.bytes().chain(frac_part.bytes()) {
            if !byte.is_ascii_digit() {
                return Err(bad());
            }
            value
                .push_digits(10, u32::from(byte - b'0'))
                .map_err(|_| bad())?;
        }
        for _ in frac_part.len()..scale as usize {
            value.push_digits(10, 0).map_err(|_| bad())?;
        }
        value.set_negative(negative);
        Ok(value)
    }

    /// Minimal big-endian two's-complement bytes, as Avro's `decimal` requires; written into
    /// `out`, returning the used tail.
    pub fn to_be_bytes<'a>(&self, out: &'a mut [u8; 33]) -> &'a [u8] {
        out[0] = 0;
        for (i, limb) in self.limbs.iter().rev().enumerate() {
            out[1 + i * 4..5 + i * 4].copy_from_slice(&limb.to_be_bytes());
        }
        let is_zero = self.limbs.iter().all(|&l| l == 0);
        if self.negative && !is_zero {
            // two's complement: invert and add one
            let mut carry = true;
            for byte in out.iter_mut().rev() {
                let (sum, overflow) = (!*byte).overflowing_add(u8::from(carry));
                *byte = sum;
                carry = overflow;
            }
        }
        let sign_byte = if self.negative && !is_zero {
            0xFF
        } else {
            0x00
        };
        let mut start = 0;
        while start < 32 && out[start] == sign_byte && (out[start + 1] & 0x80) == (sign_byte & 0x80)
        {
            start += 1;
        }
        &out[start..]
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a decimal with at most {1} fractional digits that fits in 256 bits")]
pub struct ParseDecimalError(String, u32);

/// One decoded column value, borrowing from the source's event buffer where it can.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Decimal(Unscaled),
    /// Text for `String`, `DecimalString`, `Uuid`, `Json`, `Enum` and `Set` columns.
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    /// Days since the epoch.
    Date(i32),
    /// Microseconds (time of day or duration, timestamp, local timestamp: per the column type).
    Micros(i64),
    /// Elements of an `Array` column (each may be `Null`).
    Array(Vec<Value<'a>>),
}

impl Value<'_> {
    /// The same value, independent of the buffer it borrowed from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Text(t) => Value::Text(Cow::Owned(t.into_owned())),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::Array(items) => Value::Array(items.into_iter().map(Value::into_owned).collect()),
            Value::Null => Value::Null,
            Value::Boolean(b) => Value::Boolean(b),
            Value::Int(n) => Value::Int(n),
            Value::Long(n) => Value::Long(n),
            Value::Float(x) => Value::Float(x),
            Value::Double(x) => Value::Double(x),
            Value::Decimal(d) => Value::Decimal(d),
            Value::Date(d) => Value::Date(d),
            Value::Micros(m) => Value::Micros(m),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Boolean(_) => "boolean",
            Value::Int(_) => "int",
            Value::Long(_) => "long",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Micros(_) => "microseconds",
            Value::Array(_) => "array",
        }
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends one value of a column whose type is `field_type`; `false` when they do not match.
#[inline]
fn put_value(buf: &mut Vec<u8>, field_type: &FieldType, value: &Value<'_>) -> bool {
    use FieldType as F;
    match (field_type, value) {
        (F::Boolean, Value::Boolean(b)) => put_bool(buf, *b),
        (F::Int, Value::Int(n)) | (F::Date, Value::Date(n)) => put_int(buf, *n),
        (F::Long, Value::Long(n))
        | (F::Long, Value::Micros(n))
        | (F::TimeMicros, Value::Micros(n))
        | (F::TimestampMicros, Value::Micros(n))
        | (F::LocalTimestampMicros, Value::Micros(n)) => put_long(buf, *n),
        (F::Long, Value::Int(n)) => put_long(buf, i64::from(*n)),
        (F::Float, Value::Float(x)) => put_float(buf, *x),
        (F::Double, Value::Double(x)) => put_double(buf, *x),
        (F::Double, Value::Float(x)) => put_double(buf, f64::from(*x)),
        (F::Decimal { .. }, Value::Decimal(d)) => {
            let mut scratch = [0u8; 33];
            put_bytes(buf, d.to_be_bytes(&mut scratch));
        }
        (
            F::String | F::DecimalString | F::Uuid | F::Json | F::Enum | F::Set,
            Value::Text(text),
        ) => put_str(buf, text),
        (F::Bytes, Value::Bytes(bytes)) => put_bytes(buf, bytes),
        (F::Array(items_type), Value::Array(items)) => {
            // one block holding every item, then the empty block that ends the array
            if !items.is_empty() {
                put_long(buf, items.len() as i64);
                for item in items {
                    if let Value::Null = item {
                        put_union_branch(buf, 0);
                    } else {
                        put_union_branch(buf, 1);
                        if !put_value(buf, items_type, item) {
                            return false;
                        }
                    }
                }
            }
            put_long(buf, 0);
        }
        _ => return false,
    }
    true
}

/// Encodes a row record (the `Value` schema) or a key record from decoded column values.
pub struct RowEncoder;

impl RowEncoder {
    /// Appends the row record: `values[i]` belongs to `schema.columns[i]`.
    pub fn encode_row(
        schema: &TableSchema,
        values: &[Value<'_>],
        buf: &mut Vec<u8>,
    ) -> Result<(), ConnectorError> {
        if values.len() != schema.columns.len() {
            return Err(ConnectorError::definite(format!(
                "row of {} has {} values but its schema version {} has {} columns; the table's schema history is out of step with the log (report this with the position)",
                schema.id, values.len(), schema.version, schema.columns.len()
            )));
        }
        for (index, value) in values.iter().enumerate() {
            Self::encode_column(schema, index, value, buf)?;
        }
        Ok(())
    }

    /// The row record as a new buffer.
    pub fn row_bytes(
        schema: &TableSchema,
        values: &[Value<'_>],
    ) -> Result<Vec<u8>, ConnectorError> {
        let mut buf = Vec::with_capacity(64 + values.len() * 8);
        Self::encode_row(schema, values, &mut buf)?;
        Ok(buf)
    }

    /// The key record as a new buffer, `None` when the table has no primary key.
    pub fn key_bytes(
        schema: &TableSchema,
        values: &[Value<'_>],
    ) -> Result<Option<Vec<u8>>, ConnectorError> {
        if schema.primary_key.is_empty() {
            return Ok(None);
        }
        let mut key = Vec::with_capacity(16);
        Self::encode_key(schema, values, &mut key)?;
        Ok(Some(key))
    }

    /// Appends the key record built from the primary-key columns of `values`.
    pub fn encode_key(
        schema: &TableSchema,
        values: &[Value<'_>],
        buf: &mut Vec<u8>,
    ) -> Result<(), ConnectorError> {
        for &index in &schema.primary_key {
            let value = values.get(index).unwrap_or(&Value::Null);
            Self::encode_column(schema, index, value, buf)?;
        }
        Ok(())
    }

    #[inline]
    fn encode_column(
        schema: &TableSchema,
        index: usize,
        value: &Value<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<(), ConnectorError> {
        let column = &schema.columns[index];
        let written = match value {
            Value::Null if column.nullable => {
                put_union_branch(buf, 0);
                true
            }
            Value::Null => false,
            value => {
                if column.nullable {
                    put_union_branch(buf, 1);
                }
                put_value(buf, &column.field_type, value)
            }
        };
        if written {
            Ok(())
        } else {
            Err(ConnectorError::definite(format!(
                "column {}.{} ({}) got a {} value, which its Avro type {:?} cannot hold; report this with the table definition",
                schema.id, column.name, column.sql_type, value.kind(), column.field_type
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(value: i64) -> Vec<u8> {
        let mut buf = Vec::new();
        put_long(&mut buf, value);
        buf
    }

    #[test]
    fn longs_are_zigzag_varints() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(-1), [0x01]);
        assert_eq!(varint(1), [0x02]);
        assert_eq!(varint(-64), [0x7f]);
        assert_eq!(varint(64), [0x80, 0x01]);
        assert_eq!(varint(i64::MAX).len(), 10);
        assert_eq!(
            varint(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    fn decimal_bytes(text: &str, scale: u32) -> Vec<u8> {
        let mut out = [0u8; 33];
        Unscaled::parse(text, scale)
            .unwrap()
            .to_be_bytes(&mut out)
            .to_vec()
    }

    #[test]
    fn decimals_are_minimal_twos_complement() {
        assert_eq!(decimal_bytes("0", 2), [0x00]);
        assert_eq!(decimal_bytes("-0.00", 2), [0x00]);
        assert_eq!(decimal_bytes("1.27", 2), [0x7f]);
        assert_eq!(decimal_bytes("1.28", 2), [0x00, 0x80]);
        assert_eq!(decimal_bytes("-1.28", 2), [0x80]);
        assert_eq!(decimal_bytes("-1.29", 2), [0xff, 0x7f]);
        assert_eq!(decimal_bytes("-1", 0), [0xff]);
        assert_eq!(
            decimal_bytes("12.5", 3),
            12500i64.to_be_bytes()[6..].to_vec()
        );
        // 65 nines: MySQL's widest DECIMAL
        let widest = "9".repeat(65);
        let bytes = decimal_bytes(&widest, 0);
        assert_eq!(
            bytes.len(),
            28,
            "2^215 < 10^65 - 1 < 2^216, plus a sign byte"
        );
        assert_eq!(bytes[0] & 0x80, 0);
    }

    #[test]
    fn decimal_parse_rejects_extra_scale_and_garbage() {
        assert!(Unscaled::parse("1.234", 2).is_err());
        assert!(Unscaled::parse("1e5", 2).is_err());
        assert!(Unscaled::parse("", 0).is_err());
        assert!(Unscaled::parse(&"9".repeat(80), 0).is_err());
    }
}
