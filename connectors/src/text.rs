//! Result values that REST warehouses send as JSON text (Databricks `JSON_ARRAY`) → Arrow
//! columns.
//!
//! Each column is gathered as strings and converted with Arrow's own cast kernels, in strict mode
//! (a value that does not parse as the column's type is an error, never a silent null):
//! integers, floats, decimals at the declared precision and scale, booleans, ISO dates and
//! ISO-8601 / RFC 3339 timestamps all parse that way.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::util::display::FormatOptions;
use serde_json::Value;

use crate::ConnectorError;

/// One cell as text: JSON strings as they are, numbers and booleans written out (emulators send
/// some values unquoted), arrays and objects as their JSON text, null as `None`.
pub(crate) fn cell_text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Builds one batch from rows of text cells.
pub(crate) fn batch(
    schema: &SchemaRef,
    rows: &[Vec<Option<String>>],
) -> Result<RecordBatch, ConnectorError> {
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let text: ArrayRef = Arc::new(
            rows.iter()
                .map(|r| r.get(i).and_then(|c| c.as_deref()))
                .collect::<StringArray>(),
        );
        let array = if field.data_type() == &DataType::Utf8 {
            text
        } else {
            cast_with_options(&text, field.data_type(), &options).map_err(|e| {
                ConnectorError::Execution(format!(
                    "undecodable value in column {}: {e}",
                    field.name()
                ))
            })?
        };
        columns.push(array);
    }
    RecordBatch::try_new(Arc::clone(schema), columns)
        .map_err(|e| ConnectorError::Execution(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Field, Int32Type, Schema, TimeUnit, TimestampMicrosecondType,
    };

    #[test]
    fn text_cells_decode_strictly_into_their_types() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("b", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(
                "space",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("s", DataType::Utf8, true),
        ]));
        let row = |v: [Option<&str>; 7]| v.iter().map(|c| c.map(String::from)).collect();
        let b = batch(
            &schema,
            &[
                row([
                    Some("7"),
                    Some("12.50"),
                    Some("true"),
                    Some("2024-02-29"),
                    Some("2024-02-29T10:00:00.5Z"),
                    Some("2024-02-29 10:00:00"),
                    Some("x"),
                ]),
                row([None; 7]),
            ],
        )
        .unwrap();
        assert_eq!(b.column(0).as_primitive::<Int32Type>().value(0), 7);
        assert_eq!(b.column(1).as_primitive::<Decimal128Type>().value(0), 1250);
        assert!(b.column(2).as_boolean().value(0));
        assert_eq!(b.column(3).as_primitive::<Date32Type>().value(0), 19782);
        let ts = |c: usize| {
            b.column(c)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0)
        };
        assert_eq!(ts(4), 1_709_200_800_500_000);
        assert_eq!(ts(5), 1_709_200_800_000_000);
        assert!((0..7).all(|c| b.column(c).is_null(1)));
        // Strict: a value that is not the column's type is an error, not a null.
        let bad = batch(
            &schema,
            &[row([Some("x"), None, None, None, None, None, None])],
        );
        assert!(bad.is_err());
        assert_eq!(cell_text(serde_json::json!(3)), Some("3".into()));
        assert_eq!(cell_text(serde_json::json!(true)), Some("true".into()));
        assert_eq!(cell_text(serde_json::json!([1, 2])), Some("[1,2]".into()));
    }
}
