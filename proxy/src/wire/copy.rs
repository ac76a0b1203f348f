//! `COPY (SELECT ...) TO STDOUT (FORMAT binary)`: the Arrow-native drivers' way to read an
//! answer (the ADBC PostgreSQL driver fetches every query this way). The inner query is an
//! ordinary engine request (policy, audit, the user's own credential); its rows go out as
//! binary COPY tuples, which are exactly the binary DataRow encoding, one per CopyData message
//! as PostgreSQL sends them.
//!
//! Every other `COPY` (of a table, in text or CSV, `FROM STDIN`, to a file or program) goes to
//! the policy, which refuses it as a statement that is not a read-only query.

use bytes::{BufMut, Bytes, BytesMut};
use sqlparser::ast::{CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The binary COPY header: signature, flags, header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The binary COPY trailer: a tuple of -1 fields.
const TRAILER: &[u8] = &[0xff, 0xff];

/// The query of a `COPY (query) TO STDOUT` in binary format; `None` for anything else.
pub fn binary_copy_out(sql: &str) -> Option<String> {
    let lower = sql.trim_start().get(..4)?.to_ascii_lowercase();
    if lower != "copy" {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [
        Statement::Copy {
            source: CopySource::Query(query),
            to: true,
            target: CopyTarget::Stdout,
            options,
            legacy_options,
            values,
        },
    ] = statements.as_slice()
    else {
        return None;
    };
    if !values.is_empty() {
        return None;
    }
    let binary_option = options.iter().all(|o| match o {
        CopyOption::Format(f) => f.value.eq_ignore_ascii_case("binary"),
        _ => false,
    }) && options.iter().any(|o| matches!(o, CopyOption::Format(_)));
    let binary_legacy = legacy_options.len() == 1
        && matches!(legacy_options.first(), Some(CopyLegacyOption::Binary));
    let binary = match (options.is_empty(), legacy_options.is_empty()) {
        (false, true) => binary_option,
        (true, false) => binary_legacy,
        _ => false,
    };
    binary.then(|| query.to_string())
}

/// The first CopyData: the header.
pub fn header() -> Bytes {
    Bytes::from_static(HEADER)
}

/// The last CopyData: the trailer.
pub fn trailer() -> Bytes {
    Bytes::from_static(TRAILER)
}

/// Appends one binary DataRow as a COPY tuple (field count, then the fields as they are).
pub fn put_tuple(buf: &mut BytesMut, row: &pgwire::messages::data::DataRow) {
    buf.put_i16(row.field_count);
    buf.put_slice(&row.data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binary_copy_of_a_query_to_stdout_is_recognized() {
        assert_eq!(
            binary_copy_out("COPY (SELECT id FROM orders) TO STDOUT (FORMAT binary)").as_deref(),
            Some("SELECT id FROM orders")
        );
        assert_eq!(
            binary_copy_out("copy (SELECT 1) to stdout with (format BINARY)").as_deref(),
            Some("SELECT 1")
        );
        assert!(binary_copy_out("COPY (SELECT 1) TO STDOUT BINARY").is_some());
        for sql in [
            "COPY orders TO STDOUT",
            "COPY orders TO STDOUT (FORMAT binary)",
            "COPY (SELECT 1) TO STDOUT",
            "COPY (SELECT 1) TO STDOUT (FORMAT csv)",
            "COPY (SELECT 1) TO STDOUT (FORMAT binary, HEADER true)",
            "COPY (SELECT 1) TO '/tmp/x' (FORMAT binary)",
            "COPY orders FROM STDIN (FORMAT binary)",
            "COPY (SELECT 1) TO STDOUT (FORMAT binary); SELECT 2",
            "SELECT 1",
        ] {
            assert!(binary_copy_out(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn a_tuple_is_its_field_count_then_the_fields() {
        let row = pgwire::messages::data::DataRow::new(BytesMut::from(&[0u8, 0, 0, 1, 7][..]), 1);
        let mut buf = BytesMut::new();
        put_tuple(&mut buf, &row);
        assert_eq!(&buf[..], &[0, 1, 0, 0, 0, 1, 7]);
        assert_eq!(header().len(), 19);
    }
}
