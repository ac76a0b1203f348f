//! PostgreSQL's own text output for the types whose text form the encoder (pgwire through
//! arrow-pg) writes differently: timestamps and times (PostgreSQL prints fractional seconds
//! only when there are some, without trailing zeros, and a UTC offset as `+00`; the encoder
//! always writes six digits and `+00:00`), and floats (PostgreSQL switches to exponent
//! notation below 1e-4 and from 1e15 for `float8` (1e6 for `float4`), writes `Infinity`, and
//! pads the exponent to two digits: `1e+20`, `1.5e-05`). A client that compares or parses the
//! text — a BI tool's cache key, a driver that parses `timestamp` text strictly — sees what
//! PostgreSQL itself would have sent.
//!
//! Columns sent in text format with one of those types are replaced, before encoding, by
//! `Utf8` columns holding PostgreSQL's text; their field keeps its PostgreSQL type. Binary
//! columns, and batches without such columns, pass untouched.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Float32Type, Float64Type, Time64MicrosecondType, TimeUnit};
use arrow::error::ArrowError;
use chrono::{Datelike, NaiveDateTime, Offset, TimeZone, Timelike};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// Whether a column of type `t` sent as text needs PostgreSQL's text written here.
fn rewritten(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..)
            | DataType::Time64(TimeUnit::Microsecond)
            | DataType::Float32
            | DataType::Float64
    )
}

/// `batch` with every text-format timestamp, time and float column replaced by PostgreSQL's
/// text for it (see the module). The same batch when there is none.
pub(crate) fn postgres_text(
    batch: RecordBatch,
    fields: &[FieldInfo],
) -> Result<RecordBatch, ArrowError> {
    let needs = |i: usize, t: &DataType| {
        rewritten(t)
            && fields
                .get(i)
                .is_some_and(|f| f.format() == FieldFormat::Text)
    };
    if !batch
        .columns()
        .iter()
        .enumerate()
        .any(|(i, c)| needs(i, c.data_type()))
    {
        return Ok(batch);
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    let mut schema_fields = Vec::with_capacity(batch.num_columns());
    for (i, (column, field)) in batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .enumerate()
    {
        if needs(i, column.data_type()) {
            columns.push(Arc::new(text_column(column)?));
            schema_fields.push(Arc::new(
                field.as_ref().clone().with_data_type(DataType::Utf8),
            ));
        } else {
            columns.push(Arc::clone(column));
            schema_fields.push(Arc::clone(field));
        }
    }
    RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(schema_fields)),
        columns,
    )
}

fn text_column(column: &ArrayRef) -> Result<arrow::array::StringArray, ArrowError> {
    let mut out = StringBuilder::with_capacity(column.len(), column.len() * 24);
    match column.data_type() {
        DataType::Float64 => each(column.as_primitive::<Float64Type>(), &mut out, |b, x| {
            float(b, x, 15);
            Ok(())
        })?,
        DataType::Float32 => each(column.as_primitive::<Float32Type>(), &mut out, |b, x| {
            float32(b, x);
            Ok(())
        })?,
        DataType::Time64(TimeUnit::Microsecond) => each(
            column.as_primitive::<Time64MicrosecondType>(),
            &mut out,
            |b, us| {
                let secs = us.div_euclid(1_000_000);
                let _ = write!(
                    b,
                    "{:02}:{:02}:{:02}",
                    secs / 3600,
                    secs / 60 % 60,
                    secs % 60
                );
                fraction(b, us.rem_euclid(1_000_000));
                Ok(())
            },
        )?,
        DataType::Timestamp(_, tz) => {
            let micros = arrow::compute::cast(
                column,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )?;
            let zone = match tz.as_deref() {
                None => None,
                Some(name) => Some(arrow::array::timezone::Tz::from_str(name)?),
            };
            let a: &TimestampMicrosecondArray = micros.as_primitive();
            each(a, &mut out, |b, us| timestamp(b, us, zone.as_ref()))?
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "no PostgreSQL text form written here for {other}"
            )));
        }
    }
    Ok(out.finish())
}

/// Appends `write`'s text for every value of `a` (a null stays null), through one buffer.
fn each<T: ArrowPrimitiveType>(
    a: &PrimitiveArray<T>,
    out: &mut StringBuilder,
    mut write: impl FnMut(&mut String, T::Native) -> Result<(), ArrowError>,
) -> Result<(), ArrowError> {
    let mut buf = String::with_capacity(40);
    for v in a.iter() {
        match v {
            None => out.append_null(),
            Some(x) => {
                buf.clear();
                write(&mut buf, x)?;
                out.append_value(&buf);
            }
        }
    }
    Ok(())
}

/// `.ffffff` without trailing zeros; nothing for a whole second.
fn fraction(buf: &mut String, micros: i64) {
    if micros == 0 {
        return;
    }
    let start = buf.len();
    let _ = write!(buf, ".{micros:06}");
    while buf.len() > start + 2 && buf.ends_with('0') {
        buf.pop();
    }
}

/// A timestamp as PostgreSQL prints it (DateStyle ISO): `2024-01-02 03:51:00`, fractional
/// seconds when there are some, the zone's offset at that instant for `timestamptz`
/// (`+00`, `+05:30`), `BC` after a year before 1.
fn timestamp(
    buf: &mut String,
    micros: i64,
    zone: Option<&arrow::array::timezone::Tz>,
) -> Result<(), ArrowError> {
    let out_of_range = || ArrowError::ComputeError("a timestamp out of range".into());
    let secs = micros.div_euclid(1_000_000);
    let sub = micros.rem_euclid(1_000_000);
    let utc = chrono::DateTime::from_timestamp(secs, 0)
        .ok_or_else(out_of_range)?
        .naive_utc();
    let (local, offset): (NaiveDateTime, Option<i32>) = match zone {
        None => (utc, None),
        Some(z) => {
            let off = z.offset_from_utc_datetime(&utc).fix().local_minus_utc();
            (utc + chrono::Duration::seconds(i64::from(off)), Some(off))
        }
    };
    let year = local.year();
    let (shown, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    let _ = write!(
        buf,
        "{shown:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second()
    );
    fraction(buf, sub);
    if let Some(off) = offset {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.unsigned_abs();
        let _ = write!(buf, "{sign}{:02}", a / 3600);
        if a % 3600 != 0 {
            let _ = write!(buf, ":{:02}", a / 60 % 60);
            if a % 60 != 0 {
                let _ = write!(buf, ":{:02}", a % 60);
            }
        }
    }
    if bc {
        buf.push_str(" BC");
    }
    Ok(())
}

/// A float as PostgreSQL's `float8out` prints it (shortest round-trip digits): positional
/// for decimal exponents from -4 to `digits - 1`, else `d.ddde±XX`.
fn float(buf: &mut String, x: f64, digits: i32) {
    if x.is_nan() {
        buf.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        buf.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x == 0.0 {
        buf.push_str(if x.is_sign_negative() { "-0" } else { "0" });
        return;
    }
    let sci = format!("{x:e}");
    exponent_or_plain(buf, &sci, digits, |b| {
        let _ = write!(b, "{x}");
    });
}

/// [`float`] for `float4` (6 significant digits before exponent notation), from the `f32`'s
/// own shortest digits.
fn float32(buf: &mut String, x: f32) {
    if x.is_nan() || x.is_infinite() || x == 0.0 {
        float(buf, f64::from(x), 6);
        return;
    }
    let sci = format!("{x:e}");
    exponent_or_plain(buf, &sci, 6, |b| {
        let _ = write!(b, "{x}");
    });
}

fn exponent_or_plain(buf: &mut String, sci: &str, digits: i32, plain: impl Fn(&mut String)) {
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..digits).contains(&exp) {
        plain(buf);
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(buf, "{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn f8(x: f64) -> String {
        let mut s = String::new();
        float(&mut s, x, 15);
        s
    }

    #[test]
    fn floats_print_as_postgresql_prints_them() {
        // Expected values are PostgreSQL 15's `SELECT x::float8` / `::float4` output.
        for (x, want) in [
            (0.1, "0.1"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (1e20, "1e+20"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (123_456_789_012_345.0, "123456789012345"),
            (1e15, "1e+15"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
            (-0.0, "-0"),
        ] {
            assert_eq!(f8(x), want, "{x}");
        }
        let mut s = String::new();
        float32(&mut s, 1_234_567.0);
        assert_eq!(s, "1.234567e+06");
        s.clear();
        float32(&mut s, 0.1);
        assert_eq!(s, "0.1");
    }

    #[test]
    fn timestamps_print_as_postgresql_prints_them() {
        let ts = |us: i64, zone: Option<&str>| {
            let z = zone.map(|z| arrow::array::timezone::Tz::from_str(z).unwrap());
            let mut s = String::new();
            timestamp(&mut s, us, z.as_ref()).unwrap();
            s
        };
        // 2024-01-02 03:51:00 UTC
        let t = 1_704_167_460_000_000;
        assert_eq!(ts(t, None), "2024-01-02 03:51:00");
        assert_eq!(ts(t + 500_000, None), "2024-01-02 03:51:00.5");
        assert_eq!(ts(t + 123_456, None), "2024-01-02 03:51:00.123456");
        assert_eq!(ts(t, Some("UTC")), "2024-01-02 03:51:00+00");
        assert_eq!(ts(t, Some("+05:30")), "2024-01-02 09:21:00+05:30");
        assert_eq!(ts(t, Some("-08:00")), "2024-01-01 19:51:00-08");
        // 0044-03-15 BC, as PostgreSQL numbers years (no year 0).
        assert_eq!(ts(-63_517_824_000_000_000, None), "0044-03-15 00:00:00 BC");
        // Before 1970, with a fraction.
        assert_eq!(ts(-1, None), "1969-12-31 23:59:59.999999");
    }

    #[test]
    fn times_print_as_postgresql_prints_them() {
        use arrow::array::Time64MicrosecondArray;
        let a: ArrayRef = Arc::new(Time64MicrosecondArray::from(vec![
            Some(13_000_000 + 3_600_000_000),
            Some(1_500_000),
            None,
        ]));
        let t = text_column(&a).unwrap();
        assert_eq!(t.value(0), "01:00:13");
        assert_eq!(t.value(1), "00:00:01.5");
        assert!(t.is_null(2));
    }

    #[test]
    fn only_text_columns_of_those_types_are_replaced() {
        use arrow::array::{Float64Array, Int32Array};
        use arrow::datatypes::{Field, Schema};
        use pgwire::api::Type;
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![1])),
                Arc::new(Float64Array::from(vec![Some(1e20)])),
                Arc::new(Float64Array::from(vec![Some(1e20)])),
            ],
        )
        .unwrap();
        let field = |n: &str, t: Type, f: FieldFormat| FieldInfo::new(n.into(), None, None, t, f);
        let fields = [
            field("i", Type::INT4, FieldFormat::Text),
            field("f", Type::FLOAT8, FieldFormat::Text),
            field("b", Type::FLOAT8, FieldFormat::Binary),
        ];
        let out = postgres_text(batch, &fields).unwrap();
        assert_eq!(out.column(0).data_type(), &DataType::Int32);
        assert_eq!(out.column(1).as_string::<i32>().value(0), "1e+20");
        assert_eq!(out.column(2).data_type(), &DataType::Float64);
    }
}
