//! Avro values as JSON, for people and for JSON-format sinks: decimals as exact text, bytes as
//! hex, unions unwrapped, logical types as their plain numbers.

use apache_avro::schema::{NamesRef, Schema};
use apache_avro::types::Value as AvroValue;
use serde_json::Value as Json;

/// Avro value → JSON for people: decimals as exact text, bytes as hex, unions unwrapped.
pub fn to_json(value: &AvroValue, schema: &Schema, names: &NamesRef<'_>) -> Json {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    };
    match (value, schema) {
        (AvroValue::Union(branch, inner), Schema::Union(union)) => {
            match union.variants().get(*branch as usize) {
                Some(variant) => to_json(inner, variant, names),
                None => Json::Null,
            }
        }
        (AvroValue::Record(fields), Schema::Record(record)) => Json::Object(
            fields
                .iter()
                .zip(&record.fields)
                .map(|((name, value), field)| (name.clone(), to_json(value, &field.schema, names)))
                .collect(),
        ),
        (AvroValue::Array(items), Schema::Array(array)) => Json::Array(
            items
                .iter()
                .map(|item| to_json(item, &array.items, names))
                .collect(),
        ),
        (AvroValue::Decimal(decimal), Schema::Decimal(decimal_schema)) => {
            let bytes: Vec<u8> = decimal.try_into().unwrap_or_default();
            Json::String(decimal_text(&bytes, decimal_schema.scale))
        }
        (AvroValue::Bytes(bytes), _) => {
            Json::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
        }
        (other, _) => Json::try_from(other.clone()).unwrap_or(Json::Null),
    }
}

/// A big-endian two's-complement unscaled value as decimal text with `scale` fraction digits.
pub fn decimal_text(bytes: &[u8], scale: usize) -> String {
    let n = num_bigint::BigInt::from_signed_bytes_be(bytes);
    let sign = if n.sign() == num_bigint::Sign::Minus {
        "-"
    } else {
        ""
    };
    let digits = format!("{:0>width$}", n.magnitude().to_string(), width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_text_places_the_point() {
        assert_eq!(super::decimal_text(&[0x04, 0xd2], 2), "12.34");
        assert_eq!(super::decimal_text(&[0xff], 3), "-0.001");
        assert_eq!(super::decimal_text(&[0x07], 0), "7");
    }
}
