//! Bounded work per query, and the lexical checks that run before the parser.
//!
//! sqlparser builds chains (`1 + 1 + ...`, `a AND b AND ...`, `UNION ALL ...`, `x::int::int`) in
//! a loop, so its recursion limit does not bound the depth of the tree it returns; every later
//! pass (rewrite, print, verify, drop) recurses once per level. So before anything recursive
//! runs, one flat pass over the tokens bounds the input's length, its token count and an upper
//! bound of the depth of any tree built from it; over a limit the query is refused with
//! `query_too_complex`. What is left — a deep but allowed tree — runs on a stack big enough for
//! the deepest tree the limits admit ([`with_stack`]).
//!
//! The same pass refuses tokens whose meaning differs between sqlparser and the warehouse's own
//! lexer: backslashes inside string literals or quoted identifiers where the warehouse reads
//! them as escapes (Snowflake, BigQuery, Databricks), literal kinds outside the closed set the
//! printer re-emits (`N'…'`, `X'…'`, `B'…'`, `E'…'`, `U&'…'`, raw, byte and triple-quoted
//! strings), and block comments that contain `/*` (nested comments are read differently).

use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::dialect::Dialect;
use crate::error::PolicyError;

/// Longest SQL text accepted, in bytes.
pub const MAX_SQL_BYTES: usize = 1 << 20;
/// Most tokens accepted (whitespace and comments excluded).
pub const MAX_TOKENS: usize = 100_000;
/// Largest accepted upper bound of a tree's depth (see [`depth_bound`]). An honest query with
/// a filter of a thousand `OR`ed comparisons stays under it.
pub const MAX_DEPTH_BOUND: usize = 5_000;
/// Stack the recursive passes get (see [`with_stack`]): measured in debug builds, the deepest
/// tree [`MAX_DEPTH_BOUND`] admits needs well under half of it.
pub const POLICY_STACK_BYTES: usize = 256 << 20;
/// A thread with less stack than this left moves the work to a fresh stack of
/// [`POLICY_STACK_BYTES`].
const STACK_RED_ZONE: usize = 64 << 20;

/// Runs `f` where the deepest tree the limits admit cannot overflow the stack: on the current
/// stack if enough of it is left, otherwise on a freshly allocated one.
pub fn with_stack<R>(f: impl FnOnce() -> R) -> R {
    stacker::maybe_grow(STACK_RED_ZONE, POLICY_STACK_BYTES, f)
}

fn too_complex(what: String) -> PolicyError {
    PolicyError::TooComplex(what)
}

/// Whether the warehouse reads a backslash inside a quoted string or identifier as an escape.
fn backslash_escapes(d: Dialect) -> bool {
    matches!(
        d,
        Dialect::Snowflake | Dialect::BigQuery | Dialect::Databricks
    )
}

/// Checks `sql` against the limits and the lexical rules of `dialect`, without recursion.
pub fn check_input(sql: &str, dialect: Dialect) -> Result<(), PolicyError> {
    scan(sql, dialect).map(|_| ())
}

/// [`check_input`], returning the number of tokens.
pub(crate) fn scan(sql: &str, dialect: Dialect) -> Result<usize, PolicyError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(too_complex(format!(
            "the SQL text is {} bytes long; at most {MAX_SQL_BYTES} are accepted",
            sql.len()
        )));
    }
    if sql.contains('\0') {
        return Err(PolicyError::Parse(
            "the SQL text contains a NUL character".into(),
        ));
    }
    let parser_dialect = dialect.parser_dialect();
    let tokens = Tokenizer::new(&*parser_dialect, sql)
        .with_unescape(false)
        .tokenize()
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    // Spark (Databricks) substitutes `${…}` variables in the raw text before it parses it.
    if dialect == Dialect::Databricks && sql.contains("${") {
        return Err(PolicyError::Unsupported(
            "`${` (Spark variable substitution) in Databricks SQL".into(),
        ));
    }
    let mut count = 0usize;
    for t in &tokens {
        lexical(t, dialect)?;
        if !matches!(t, Token::Whitespace(_) | Token::EOF) {
            count += 1;
        }
    }
    if count > MAX_TOKENS {
        return Err(too_complex(format!(
            "the query has {count} tokens; at most {MAX_TOKENS} are accepted"
        )));
    }
    let bound = depth_bound(&tokens);
    if bound > MAX_DEPTH_BOUND {
        return Err(too_complex(format!(
            "the query nests too deeply (a bound of {bound} levels; at most {MAX_DEPTH_BOUND})"
        )));
    }
    Ok(count)
}

thread_local! {
    static PARSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times the policy has parsed SQL on this thread (tests prove a cache hit parses
/// nothing).
pub fn parses_on_this_thread() -> u64 {
    PARSES.with(std::cell::Cell::get)
}

/// Parses `sql`, of about `tokens` tokens, with `dialect` under a budget of parse steps
/// ([`crate::metered`]): sqlparser's backtracking cannot take exponential time. Over the budget
/// the query is `query_too_complex`; a syntax error is `sql_parse_error`.
pub(crate) fn parse_metered(
    sql: &str,
    dialect: Box<dyn sqlparser::dialect::Dialect>,
    tokens: usize,
    recursion_limit: usize,
) -> Result<Vec<sqlparser::ast::Statement>, PolicyError> {
    PARSES.with(|c| c.set(c.get() + 1));
    let metered = crate::metered::Metered::new(dialect, tokens);
    let parsed = sqlparser::parser::Parser::new(&metered)
        .with_recursion_limit(recursion_limit)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements());
    parsed.map_err(|e| {
        if metered.exhausted() {
            too_complex(
                "parsing it takes too many steps (nested constructs the parser must \
                 try more than one way)"
                    .to_string(),
            )
        } else {
            PolicyError::Parse(e.to_string())
        }
    })
}

/// Parses SQL that has not been through [`check_input`] (the federated router's generic
/// reading): bounded like any query, under the same step budget, on the policy's stack.
pub fn parse_statements(
    sql: &str,
    dialect: Box<dyn sqlparser::dialect::Dialect>,
    lexical: Dialect,
) -> Result<Vec<sqlparser::ast::Statement>, PolicyError> {
    let tokens = scan(sql, lexical)?;
    with_stack(|| parse_metered(sql, dialect, tokens, crate::MAX_PARSE_DEPTH))
}

fn lexical(t: &Token, d: Dialect) -> Result<(), PolicyError> {
    let refuse = |what: &str| Err(PolicyError::Unsupported(what.to_string()));
    match t {
        Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => {
            if backslash_escapes(d) && s.contains('\\') {
                return refuse("backslashes in string literals (read as escapes by the warehouse)");
            }
            Ok(())
        }
        Token::DollarQuotedString(_) => Ok(()),
        Token::Word(w) if w.quote_style.is_some() => {
            if backslash_escapes(d) && w.value.contains('\\') {
                return refuse("backslashes in quoted identifiers");
            }
            Ok(())
        }
        Token::NationalStringLiteral(_) => refuse("national string literals (N'...')"),
        Token::HexStringLiteral(_) => refuse("hexadecimal literals (X'...', 0x...)"),
        Token::EscapedStringLiteral(_) => refuse("escape string literals (E'...')"),
        Token::UnicodeStringLiteral(_) => refuse("Unicode escape string literals (U&'...')"),
        Token::TripleSingleQuotedString(_) | Token::TripleDoubleQuotedString(_) => {
            refuse("triple-quoted string literals")
        }
        Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_) => {
            refuse("byte string and bit string literals (B'...')")
        }
        Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_) => refuse("raw string literals (R'...')"),
        Token::QuoteDelimitedStringLiteral(_) | Token::NationalQuoteDelimitedStringLiteral(_) => {
            refuse("quote-delimited string literals")
        }
        Token::Whitespace(Whitespace::MultiLineComment(c)) if c.contains("/*") => {
            refuse("nested block comments")
        }
        // PostgreSQL ends a `--` comment at a carriage return, sqlparser only at a newline.
        Token::Whitespace(Whitespace::SingleLineComment { comment, .. })
            if comment.trim_end_matches('\n').contains('\r') =>
        {
            refuse("a carriage return inside a -- comment")
        }
        Token::Backslash => refuse("backslashes outside string literals"),
        _ => Ok(()),
    }
}

/// One open parenthesis (or bracket) while scanning.
#[derive(Default)]
struct Group {
    /// Tokens since the last comma at this level: each can add at most one level to the tree
    /// of the current list item (an over-estimate: `a = 1 OR b = 2` counts 7 for a depth of 2).
    ops: usize,
    /// Deepest group closed inside the current list item.
    child: usize,
    /// Deepest list item finished at this level.
    best: usize,
    /// Set operations at this level: a `UNION` chain spans the commas of its select lists.
    set_ops: usize,
}

impl Group {
    fn depth(&self) -> usize {
        self.best.max(self.ops + self.child) + self.set_ops
    }
}

/// An upper bound of the depth of any tree sqlparser builds from `tokens`, computed without
/// recursion: within a parenthesis, list items (separated by commas) are independent subtrees,
/// and each token of an item adds at most one level to it; a parenthesis adds one level to
/// the deepest item inside it; set operators chain across list items.
pub(crate) fn depth_bound(tokens: &[Token]) -> usize {
    // Each open group with the summed bound of the groups enclosing it (frozen while it is
    // open: only the innermost group changes).
    let mut stack: Vec<(Group, usize)> = vec![(Group::default(), 0)];
    let mut deepest = 0usize;
    for t in tokens {
        match t {
            Token::Whitespace(_) | Token::EOF => {}
            Token::LParen | Token::LBracket | Token::LBrace => {
                let below = stack.last().map_or(0, |(g, b)| b + g.depth() + 1);
                stack.push((Group::default(), below));
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                let closed = match stack.pop() {
                    Some((g, _)) => g.depth() + 1,
                    None => 1,
                };
                if stack.is_empty() {
                    // Unbalanced: the parser refuses it; keep counting conservatively.
                    stack.push((Group::default(), 0));
                }
                if let Some((top, _)) = stack.last_mut() {
                    top.child = top.child.max(closed);
                    top.ops += 1;
                }
            }
            Token::Comma => {
                if let Some((top, _)) = stack.last_mut() {
                    top.best = top.best.max(top.ops + top.child);
                    top.ops = 0;
                    top.child = 0;
                }
            }
            Token::Word(w)
                if w.quote_style.is_none()
                    && ["UNION", "INTERSECT", "EXCEPT", "MINUS"]
                        .iter()
                        .any(|k| w.value.eq_ignore_ascii_case(k)) =>
            {
                if let Some((top, _)) = stack.last_mut() {
                    top.set_ops += 1;
                    top.ops += 1;
                }
            }
            _ => {
                if let Some((top, _)) = stack.last_mut() {
                    top.ops += 1;
                }
            }
        }
        // Open groups nest: the bound at any point is the sum along the stack.
        let open = stack.last().map_or(0, |(g, below)| below + g.depth() + 1);
        deepest = deepest.max(open);
        if deepest > MAX_DEPTH_BOUND {
            break;
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn bound(sql: &str) -> usize {
        let d = sqlparser::dialect::PostgreSqlDialect {};
        depth_bound(&Tokenizer::new(&d, sql).tokenize().unwrap())
    }

    #[test]
    fn chains_count_per_term_and_lists_per_item() {
        let chain = |n: usize| {
            let mut s = "SELECT 1".to_string();
            for _ in 0..n {
                s.push_str(" + 1");
            }
            s
        };
        assert!(bound(&chain(10)) < bound(&chain(100)));
        assert!(bound(&chain(3_000)) > MAX_DEPTH_BOUND);
        // A long select list is flat.
        let cols: Vec<String> = (0..10_000).map(|i| format!("c{i}")).collect();
        assert!(bound(&format!("SELECT {} FROM t", cols.join(", "))) < 20);
        // A UNION chain is not, whatever the commas.
        let mut u = "SELECT 1, 2".to_string();
        for _ in 0..6_000 {
            u.push_str(" UNION ALL SELECT 1, 2");
        }
        assert!(bound(&u) > MAX_DEPTH_BOUND);
        // Parentheses add up.
        let deep = format!("SELECT {}1{}", "(".repeat(6_000), ")".repeat(6_000));
        assert!(bound(&deep) > MAX_DEPTH_BOUND);
    }

    #[test]
    fn literal_kinds_outside_the_closed_set_are_refused() {
        for (sql, d) in [
            ("SELECT N'x'", Dialect::Postgres),
            ("SELECT X'1F'", Dialect::Postgres),
            ("SELECT E'\\x41'", Dialect::Postgres),
            ("SELECT U&'d\\0061t'", Dialect::Postgres),
            ("SELECT '\\' AS a", Dialect::Databricks),
            ("SELECT '\\' AS a", Dialect::BigQuery),
            ("SELECT 'a\\'b'", Dialect::Snowflake),
            ("SELECT `a\\`", Dialect::BigQuery),
            ("SELECT 1 /* a /* b */ */", Dialect::Postgres),
            ("SELECT 1 -- a\r UNION SELECT 2\n", Dialect::Postgres),
        ] {
            assert!(check_input(sql, d).is_err(), "{sql} passed for {d:?}");
        }
        for (sql, d) in [
            ("SELECT 'it''s', '\\d'", Dialect::Postgres),
            ("SELECT $$x$$", Dialect::Postgres),
            ("SELECT 'a' /* c */ -- d", Dialect::BigQuery),
        ] {
            assert!(check_input(sql, d).is_ok(), "{sql} refused for {d:?}");
        }
    }
}
