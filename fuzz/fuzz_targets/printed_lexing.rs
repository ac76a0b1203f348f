//! Differential lexing of what sluice prints: random token sequences and literals (quotes,
//! backslashes, comment openers, literal prefixes, signs, Unicode, odd whitespace) are rewritten
//! by the policy; whatever it accepts for PostgreSQL is tokenized twice, by PostgreSQL's own
//! scanner (libpg_query) and by sqlparser, and the two token streams must agree token for token
//! (and hold no comment). Any disagreement the verifier let through is a finding. For the other
//! dialects, accepted output must be canonical (no comment opener outside quotes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pg_query::protobuf::Token as PgToken;
use sluice_policy::{Caller, Catalog, Dialect, TableName, TableRule};
use sqlparser::tokenizer::{Token, Tokenizer};

/// Pieces the input bytes choose from: the ones that broke printers before and their cousins.
const PIECES: &[&str] = &[
    "'", "''", "\"", "`", "\\", "\\'", "--", "/*", "*/", "//", "#", "-", "- -", "+", "*", "/",
    ">", "<", "=", ">/*", ">*/", "@-@", "!", "~", "|", "||", "&", "^", "%", "?", ":", "::", "$",
    "$$", "$1", ";", ",", ".", "(", ")", "[", "]", "N'", "E'", "X'", "B'", "U&'", "r'", "b'",
    "n'", "e'", "0x1F", "1_000", "1e5", ".5", "5.", "1", "0", "-1", "\n", "\r", "\t", " ",
    "\u{212A}", "\u{00A0}", "\u{FEFF}", "é", "SELECT", "FROM", "WHERE", "AND", "OR", "NOT",
    "UNION", "ALL", "AS", "CASE", "WHEN", "THEN", "ELSE", "END", "IN", "IS", "NULL", "LIKE",
    "ESCAPE", "BETWEEN", "CAST", "INT", "TEXT", "DATE", "INTERVAL", "id", "amount", "note",
    "card_number", "orders", "customers", "countries", "public.orders", "\"orders\"",
    "\"Orders\"", "count", "\"count\"", "\"COUNT\"", "coalesce", "lower", "pg_read_file", "ctid",
];

fn catalog(d: Dialect) -> Option<Catalog> {
    let fold = |s: &str| if d == Dialect::Snowflake { s.to_uppercase() } else { s.to_string() };
    let t = |n: &str| TableName { catalog: None, schema: fold("public"), table: fold(n) };
    let cols = |c: &[&str]| c.iter().map(|s| fold(s)).collect::<Vec<_>>();
    let mut orders = TableRule::protected(
        t("orders"),
        &fold("tenant_id"),
        cols(&["id", "tenant_id", "amount", "note", "card_number"]),
    );
    orders.column_groups.insert(fold("card_number"), vec!["billing".into()]);
    let rules = vec![
        TableRule::public(t("countries"), cols(&["code", "name"])),
        orders,
        TableRule::protected(t("customers"), &fold("tenant_id"), cols(&["id", "tenant_id", "name"])),
    ];
    Catalog::new(d, d.default_param_style(), None, fold("public"), rules).ok()
}

/// The input as SQL: a fixed frame around pieces chosen by the bytes, with literal text in
/// between where a byte asks for it.
fn sql_from(data: &[u8]) -> String {
    let mut s = String::from("SELECT ");
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        i += 1;
        if b < 0xF0 {
            s.push_str(PIECES[usize::from(b) % PIECES.len()]);
        } else {
            // Raw text: the next few bytes as they are (lossy UTF-8).
            let n = usize::from(b & 0x0F).min(data.len() - i);
            s.push_str(&String::from_utf8_lossy(&data[i..i + n]));
            i += n;
        }
        if b & 1 == 0 {
            s.push(' ');
        }
    }
    s.push_str(" FROM orders");
    s
}

/// A token's class and, for symbols, its text.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    Word,
    QuotedIdent,
    String,
    Number,
    Param,
    Sym(String),
}

fn pg_classes(sql: &str) -> Vec<Class> {
    let scan = match pg_query::scan(sql) {
        Ok(s) => s,
        Err(e) => panic!("accepted SQL does not scan in PostgreSQL: {e}\n{sql}"),
    };
    scan.tokens
        .iter()
        .map(|t| {
            let text = sql.get(t.start as usize..t.end as usize).unwrap_or("");
            if t.token == PgToken::SqlComment as i32 || t.token == PgToken::CComment as i32 {
                panic!("PostgreSQL reads a comment in accepted SQL: {text:?}\n{sql}");
            }
            if t.keyword_kind != 0 {
                Class::Word
            } else if t.token == PgToken::Ident as i32 {
                if text.starts_with('"') { Class::QuotedIdent } else { Class::Word }
            } else if t.token == PgToken::Sconst as i32 {
                Class::String
            } else if t.token == PgToken::Iconst as i32 || t.token == PgToken::Fconst as i32 {
                Class::Number
            } else if t.token == PgToken::Param as i32 {
                Class::Param
            } else {
                Class::Sym(text.to_string())
            }
        })
        .collect()
}

fn sqlparser_classes(sql: &str) -> Vec<Class> {
    let d = sqlparser::dialect::PostgreSqlDialect {};
    let tokens = match Tokenizer::new(&d, sql).tokenize() {
        Ok(t) => t,
        Err(e) => panic!("accepted SQL does not tokenize in sqlparser: {e}\n{sql}"),
    };
    tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::EOF))
        .map(|t| match t {
            Token::Word(w) if w.quote_style.is_some() => Class::QuotedIdent,
            Token::Word(_) => Class::Word,
            Token::SingleQuotedString(_) => Class::String,
            Token::Number(..) => Class::Number,
            Token::Placeholder(p) if p.starts_with('$') => Class::Param,
            other => Class::Sym(other.to_string()),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let sql = sql_from(data);
    let groups = vec!["analyst".to_string()];
    let caller = Caller { tenant: "A", groups: &groups, row_limit: None, attributes: &sluice_policy::NO_ATTRIBUTES };
    for d in [Dialect::Postgres, Dialect::Snowflake, Dialect::BigQuery, Dialect::Databricks] {
        let Some(catalog) = catalog(d) else { return };
        let Ok(out) = sluice_policy::rewrite(&sql, &catalog, &caller) else { continue };
        if d == Dialect::Postgres {
            let pg = pg_classes(&out.sql);
            let sp = sqlparser_classes(&out.sql);
            assert_eq!(pg, sp, "the two lexers read accepted SQL differently:\n{}", out.sql);
        }
        // Outside quotes, nothing can open or close a comment.
        let mut quote = None;
        let mut outside = String::new();
        for c in out.sql.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' || c == '`' => quote = Some(c),
                None => outside.push(c),
            }
        }
        for bad in ["--", "/*", "*/", "//", ";", "\\"] {
            assert!(!outside.contains(bad), "{bad} outside quotes in {d:?}: {}", out.sql);
        }
    }
});
