//! The PostgreSQL verifier: proves the policy's invariants on the parse tree PostgreSQL itself
//! builds from the exact text about to be sent (libpg_query, through the `pg_query` crate),
//! sharing nothing with sqlparser's lexer, parser or printer.
//!
//! On that tree: exactly one `SELECT` (no `INTO`, no locking clause, no data-modifying CTE);
//! no comment anywhere in the text; every relation is a CTE in scope (unqualified), a public
//! table the caller reads whole (fully qualified as declared), or the single relation of a
//! tenant wrapper of exactly the expected shape (the caller's projection as PostgreSQL reads
//! it, `WHERE <tenant column> = $1` plus only the copied leakproof comparisons, `OFFSET 0`);
//! every function, operator, type and SQL-value function is on a closed list; no bind
//! parameter outside a wrapper; no system column; every qualified column reference `q.c` names
//! a column the relation `q` really has (PostgreSQL reads `q.f` for any other `f` as the call
//! `f(q)`, so `o.row_to_json` would call a function no allow-list saw); the outermost query
//! carries the row cap. Node kinds not listed here are refused.

use pg_query::NodeEnum as N;
use pg_query::protobuf as pb;

use crate::catalog::{Access, Catalog, TableName, TableRule};
use crate::dialect::{Dialect, is_system_column};
use crate::error::PolicyError;
use crate::{Caller, TenantBinding, functions, mask};

type V = Result<(), String>;

/// How many column names the verifier works out for one query, at most.
const MAX_COLUMN_NAMES: usize = 1 << 20;

/// A relation a qualified column reference can name, as PostgreSQL sees it: its name in scope
/// (alias, or CTE name) and the columns it has. Columns are only ever under-counted (an output
/// PostgreSQL names in a way not modelled here gets no name): a reference to it is refused.
struct Rel {
    name: String,
    columns: Vec<String>,
    /// Whether `columns` are in PostgreSQL's order, one per column (not after `*` over a USING
    /// or NATURAL join, which merges columns): an alias column list renames by position.
    exact: bool,
    /// The declared table this item is the wrapper of, when its columns keep their declared
    /// names (no alias column list): what a correlated copy may compare with.
    wraps: Option<TableName>,
}

/// A query level's output columns.
#[derive(Clone)]
struct Cols {
    names: Vec<String>,
    exact: bool,
}

impl Rel {
    /// A CTE of a `WITH RECURSIVE` list not worked out yet: in scope, no known column.
    fn opaque(name: &str) -> Rel {
        Rel {
            name: name.to_string(),
            columns: Vec::new(),
            exact: false,
            wraps: None,
        }
    }

    /// `cols` under the name `name`, renamed by an alias column list (`AS x(a, b)` renames
    /// the first two).
    fn named(name: &str, cols: Cols, alias: Option<&pb::Alias>) -> Result<Rel, String> {
        let Cols {
            names: mut columns,
            exact,
        } = cols;
        let new = match alias {
            Some(a) => names(&a.colnames).ok_or("an alias column list of an unexpected kind")?,
            None => Vec::new(),
        };
        if !new.is_empty() && !exact {
            return Err(format!(
                "a column list for {name} over columns whose order is not known here"
            ));
        }
        for (i, n) in new.into_iter().enumerate() {
            match columns.get_mut(i) {
                Some(c) => *c = n.to_string(),
                None => columns.push(n.to_string()),
            }
        }
        Ok(Rel {
            name: name.to_string(),
            columns,
            exact,
            wraps: None,
        })
    }
}

/// What a query level sees: its CTEs and FROM items, then its parent's (innermost wins).
#[derive(Clone, Copy)]
struct Scope<'p> {
    parent: Option<&'p Scope<'p>>,
    ctes: &'p [Rel],
    rels: &'p [Rel],
}

impl<'p> Scope<'p> {
    const ROOT: Scope<'static> = Scope {
        parent: None,
        ctes: &[],
        rels: &[],
    };

    fn level(parent: &'p Scope<'p>, ctes: &'p [Rel], rels: &'p [Rel]) -> Scope<'p> {
        Scope {
            parent: Some(parent),
            ctes,
            rels,
        }
    }

    fn cte(&self, name: &str) -> Option<&'p Rel> {
        match self.ctes.iter().rev().find(|r| r.name == name) {
            Some(r) => Some(r),
            None => self.parent.and_then(|p| p.cte(name)),
        }
    }

    fn rel(&self, name: &str) -> Option<&'p Rel> {
        match self.rels.iter().rev().find(|r| r.name == name) {
            Some(r) => Some(r),
            None => self.parent.and_then(|p| p.rel(name)),
        }
    }
}

/// The name PostgreSQL gives an unnamed select-list item (`FigureColname`), for the kinds it
/// names after something in the tree; `None` for the rest (PostgreSQL's `?column?`, or a kind
/// not modelled here), which no qualified reference can then name.
fn figure_colname(e: Option<&N>) -> Option<String> {
    match figure(e) {
        Some((name, strength)) if strength > 0 => Some(name),
        _ => None,
    }
}

/// `FigureColnameInternal`: a name and its strength (2 a real name, 1 a fallback such as a cast's
/// type, 0 none); `None` for a kind not modelled, so a fallback is never claimed where
/// PostgreSQL would have found a stronger name inside.
fn figure(e: Option<&N>) -> Option<(String, u8)> {
    let Some(e) = e else {
        return Some((String::new(), 0));
    };
    match e {
        N::ColumnRef(c) => c.fields.last().and_then(string).map(|n| (n.to_string(), 2)),
        N::FuncCall(f) => f
            .funcname
            .last()
            .and_then(string)
            .map(|n| (n.to_string(), 2)),
        N::CoalesceExpr(_) => Some(("coalesce".into(), 2)),
        N::AExpr(a) if a.kind == pb::AExprKind::AexprNullif as i32 => Some(("nullif".into(), 2)),
        N::AConst(_)
        | N::AExpr(_)
        | N::BoolExpr(_)
        | N::NullTest(_)
        | N::BooleanTest(_)
        | N::ParamRef(_) => Some((String::new(), 0)),
        N::TypeCast(t) => match figure(node(&t.arg))? {
            strong @ (_, 2) => Some(strong),
            _ => t
                .type_name
                .as_ref()
                .and_then(|tn| tn.names.last())
                .and_then(string)
                .map(|n| (n.to_string(), 1)),
        },
        N::CaseExpr(c) => match figure(node(&c.defresult))? {
            strong @ (_, 2) => Some(strong),
            _ => Some(("case".into(), 1)),
        },
        _ => None,
    }
}

/// Functions PostgreSQL's grammar itself produces for SQL-standard syntax (`EXTRACT(… FROM …)`,
/// `POSITION(… IN …)`, `SUBSTRING(… FROM … FOR …)`, `TRIM(…)`, `OVERLAPS`, `AT TIME ZONE`,
/// `LIKE … ESCAPE`, `SIMILAR TO`), schema-qualified with `pg_catalog`.
const SQL_SYNTAX_FUNCTIONS: &[&str] = &[
    "extract",
    "position",
    "substring",
    "btrim",
    "ltrim",
    "rtrim",
    "overlaps",
    "timezone",
    "like_escape",
    "similar_to_escape",
];

/// Operators the canonical printer can emit for PostgreSQL.
const OPERATORS: &[&str] = &[
    "+", "-", "*", "/", "%", "^", "||", "=", "<>", "<", ">", "<=", ">=", "#", "<<", ">>", "&", "|",
    "~", "~*", "!~", "!~*", "~~", "~~*", "!~~", "!~~*", "^@", "->", "->>", "#>", "#>>", "@>", "<@",
    "?", "?&", "?|",
];

/// Comparisons a copied conjunct may use inside a wrapper.
const COMPARISONS: &[&str] = &["=", "<>", "<", ">", "<=", ">="];

/// Built-in types a cast may name.
const TYPES: &[&str] = &[
    "bool",
    "int2",
    "int4",
    "int8",
    "float4",
    "float8",
    "numeric",
    "text",
    "varchar",
    "bpchar",
    "date",
    "time",
    "timetz",
    "timestamp",
    "timestamptz",
    "interval",
    "uuid",
    "bytea",
    "json",
    "jsonb",
];

fn node(n: &Option<Box<pb::Node>>) -> Option<&N> {
    n.as_ref().and_then(|b| b.node.as_ref())
}

fn string(n: &pb::Node) -> Option<&str> {
    match &n.node {
        Some(N::String(s)) => Some(&s.sval),
        _ => None,
    }
}

fn names(list: &[pb::Node]) -> Option<Vec<&str>> {
    list.iter().map(string).collect()
}

/// Verifies `sql` (already printed by sluice for PostgreSQL) on PostgreSQL's own parse tree.
pub(crate) fn verify(
    sql: &str,
    catalog: &Catalog,
    binding: &TenantBinding,
    caller: &Caller<'_>,
) -> Result<(), PolicyError> {
    let bad = |why: String| PolicyError::Verification(format!("PostgreSQL parse tree: {why}"));
    let scan = pg_query::scan(sql).map_err(|e| bad(format!("the text does not scan: {e}")))?;
    for t in &scan.tokens {
        if t.token == pb::Token::SqlComment as i32 || t.token == pb::Token::CComment as i32 {
            return Err(bad("a comment".into()));
        }
        if t.token == i32::from(b';') {
            return Err(bad("a semicolon".into()));
        }
    }
    let parsed = pg_query::parse(sql, 0).map_err(|e| bad(format!("does not parse: {e}")))?;
    let [raw] = parsed.protobuf.stmts.as_slice() else {
        return Err(bad("not exactly one statement".into()));
    };
    let Some(N::SelectStmt(select)) = node(&raw.stmt) else {
        return Err(bad("not a SELECT".into()));
    };
    let caller_params = binding.caller();
    let mut param_occurrences = vec![0u32; caller_params.count + 1];
    if caller_params.count > 0 {
        for (n, ..) in parsed.protobuf.nodes() {
            if let pg_query::NodeRef::ParamRef(p) = n
                && let Some(c) = usize::try_from(p.number)
                    .ok()
                    .and_then(|i| param_occurrences.get_mut(i))
            {
                *c += 1;
            }
        }
    }
    let v = PgVerifier {
        param_occurrences,
        catalog,
        binding,
        groups: caller.groups,
        attributes: caller.attributes,
        expected: std::cell::RefCell::default(),
        names_left: std::cell::Cell::new(MAX_COLUMN_NAMES),
        out_of_names: std::cell::Cell::new(false),
        closed: std::cell::Cell::new(false),
    };
    v.select(select, &Scope::ROOT).map_err(|why| {
        // The budget ran out: the query is too complex, not malformed.
        if v.out_of_names.get() {
            PolicyError::TooComplex(why)
        } else {
            bad(why)
        }
    })?;
    if let Some(cap) = caller.row_limit {
        let n = match node(&select.limit_count) {
            Some(N::AConst(c)) => match &c.val {
                Some(pb::a_const::Val::Ival(i)) => u64::try_from(i.ival).ok(),
                _ => None,
            },
            _ => None,
        };
        if n.is_none_or(|n| n > cap) || select.limit_option == pb::LimitOption::WithTies as i32 {
            return Err(bad("the outermost query is not capped".into()));
        }
    }
    Ok(())
}

struct PgVerifier<'a> {
    /// How often each parameter number occurs in the statement (`is_copied`).
    param_occurrences: Vec<u32>,
    catalog: &'a Catalog,
    binding: &'a TenantBinding,
    groups: &'a [String],
    /// The caller's attributes (the row filters' values).
    attributes: &'a crate::Attributes,
    /// The expected projection of each table already seen in this query, as PostgreSQL
    /// deparses it (a table read five times is worked out once).
    expected: std::cell::RefCell<std::collections::HashMap<String, String>>,
    /// Column names the scope model may still copy (`*` over joins of CTEs doubles them per
    /// level: 41 CTEs would ask for 2^40).
    names_left: std::cell::Cell<usize>,
    /// Set when `names_left` ran out: the refusal is `query_too_complex`.
    out_of_names: std::cell::Cell<bool>,
    /// Set while a sub-query copied inside a wrapper (`is_copied_in`) is walked: every column
    /// reference must be qualified (and so resolve inside it), no parameter, no sub-query.
    closed: std::cell::Cell<bool>,
}

impl<'a> PgVerifier<'a> {
    fn spend(&self, names: usize) -> V {
        let left = self.names_left.get();
        if names > left {
            self.out_of_names.set(true);
            return Err(format!(
                "more than {MAX_COLUMN_NAMES} column names to work out"
            ));
        }
        self.names_left.set(left - names);
        Ok(())
    }

    fn rule(&self, rv: &pb::RangeVar) -> Option<&'a TableRule> {
        let mut parts = Vec::with_capacity(3);
        if !rv.catalogname.is_empty() {
            parts.push(rv.catalogname.clone());
        }
        parts.push(rv.schemaname.clone());
        parts.push(rv.relname.clone());
        self.catalog.by_emitted_name(&parts)
    }

    /// Verifies one query level and returns its output columns.
    fn select(&self, s: &pb::SelectStmt, outer: &Scope<'_>) -> Result<Cols, String> {
        self.select_arms(s, outer, None)
    }

    /// [`Self::select`], with the output of the left arm of a set operation already worked out
    /// (and verified) by the caller: a recursive CTE's non-recursive term is walked once, not
    /// once per nesting level.
    fn select_arms(
        &self,
        s: &pb::SelectStmt,
        outer: &Scope<'_>,
        left: Option<Cols>,
    ) -> Result<Cols, String> {
        if s.into_clause.is_some() || !s.locking_clause.is_empty() {
            return Err("SELECT INTO or a locking clause".into());
        }
        let mut ctes: Vec<Rel> = Vec::new();
        if let Some(w) = &s.with_clause {
            let mut items = Vec::with_capacity(w.ctes.len());
            for c in &w.ctes {
                let Some(N::CommonTableExpr(c)) = &c.node else {
                    return Err("a WITH item that is not a CTE".into());
                };
                if c.search_clause.is_some() || c.cycle_clause.is_some() {
                    return Err("SEARCH / CYCLE clauses".into());
                }
                let Some(N::SelectStmt(body)) = node(&c.ctequery) else {
                    return Err(format!("the CTE {} is not a SELECT", c.ctename));
                };
                let alias = pb::Alias {
                    aliasname: c.ctename.clone(),
                    colnames: c.aliascolnames.clone(),
                };
                items.push((c.ctename.as_str(), body.as_ref(), alias));
            }
            if w.recursive {
                // Every CTE of the list is in scope in every body (PostgreSQL orders them by
                // dependency); one not worked out yet has no known columns.
                ctes = items.iter().map(|(name, _, _)| Rel::opaque(name)).collect();
                for (i, (name, body, alias)) in items.iter().enumerate() {
                    let set_operation = body.op != pb::SetOperation::SetopNone as i32;
                    if set_operation && body.with_clause.is_some() {
                        // Its arms would see that WITH: the first arm is not walked alone.
                        return Err(format!("a WITH inside the recursive CTE {name}"));
                    }
                    let first = match (&body.larg, !set_operation) {
                        (Some(l), false) => {
                            let sc = Scope::level(outer, &ctes, &[]);
                            let first = self.select(l, &sc)?;
                            ctes[i] = Rel::named(name, first.clone(), Some(alias))?;
                            Some(first)
                        }
                        _ => None,
                    };
                    let sc = Scope::level(outer, &ctes, &[]);
                    let cols = self.select_arms(body, &sc, first)?;
                    ctes[i] = Rel::named(name, cols, Some(alias))?;
                }
            } else {
                for (name, body, alias) in &items {
                    let sc = Scope::level(outer, &ctes, &[]);
                    let cols = self.select(body, &sc)?;
                    ctes.push(Rel::named(name, cols, Some(alias))?);
                }
            }
        }
        // A FROM item sees this level's CTEs and the levels outside; a LATERAL one also the
        // items before it.
        let plain = Scope::level(outer, &ctes, &[]);
        let mut rels: Vec<Rel> = Vec::new();
        let mut merged = false;
        for f in &s.from_clause {
            let lateral = Scope::level(outer, &ctes, &rels);
            let (more, m) = self.relation(f, &plain, &lateral)?;
            merged |= m;
            rels.extend(more);
        }
        let scope = Scope::level(outer, &ctes, &rels);
        let vis = &scope;
        let mut output = Cols {
            names: Vec::new(),
            exact: true,
        };
        match pb::SetOperation::try_from(s.op) {
            Ok(pb::SetOperation::SetopNone) => {}
            Ok(
                pb::SetOperation::SetopUnion
                | pb::SetOperation::SetopIntersect
                | pb::SetOperation::SetopExcept,
            ) => {
                let (Some(l), Some(r)) = (&s.larg, &s.rarg) else {
                    return Err("a set operation without both sides".into());
                };
                output = match left {
                    Some(known) => known,
                    None => self.select(l, vis)?,
                };
                self.select(r, vis)?;
            }
            _ => return Err("an unknown set operation".into()),
        }
        for d in &s.distinct_clause {
            if d.node.is_some() {
                self.expr(d, vis)?;
            }
        }
        for t in &s.target_list {
            let Some(N::ResTarget(r)) = &t.node else {
                return Err("a select-list item of an unexpected kind".into());
            };
            if !r.indirection.is_empty() {
                return Err("a select-list item of an unexpected kind".into());
            }
            self.opt(&r.val, vis)?;
            if !r.name.is_empty() {
                output.names.push(r.name.clone());
                continue;
            }
            match node(&r.val) {
                Some(N::ColumnRef(c))
                    if matches!(
                        c.fields.last().and_then(|f| f.node.as_ref()),
                        Some(N::AStar(_))
                    ) =>
                {
                    // `*` or `q.*`: the columns of every FROM item, or of `q`.
                    match names(&c.fields[..c.fields.len() - 1]).as_deref() {
                        Some([]) => {
                            // USING and NATURAL merge columns: names right, positions not.
                            output.exact &= !merged;
                            for r in &rels {
                                output.exact &= r.exact;
                                self.spend(r.columns.len())?;
                                output.names.extend(r.columns.iter().cloned());
                            }
                        }
                        Some([q]) => {
                            let r = vis
                                .rel(q)
                                .ok_or_else(|| format!("{q}.* names no relation in scope"))?;
                            output.exact &= r.exact;
                            self.spend(r.columns.len())?;
                            output.names.extend(r.columns.iter().cloned());
                        }
                        _ => return Err("a column reference of an unexpected kind".into()),
                    }
                }
                other => output.names.push(figure_colname(other).unwrap_or_default()),
            }
        }
        self.opt(&s.where_clause, vis)?;
        for g in &s.group_clause {
            self.expr(g, vis)?;
        }
        self.opt(&s.having_clause, vis)?;
        for w in &s.window_clause {
            match &w.node {
                Some(N::WindowDef(w)) => self.window(w, vis)?,
                _ => return Err("a WINDOW item of an unexpected kind".into()),
            }
        }
        for row in &s.values_lists {
            self.expr(row, vis)?;
        }
        if let Some(Some(N::List(first))) = s.values_lists.first().map(|r| r.node.as_ref()) {
            output
                .names
                .extend((1..=first.items.len()).map(|i| format!("column{i}")));
        }
        for o in &s.sort_clause {
            self.sort_by(o, vis)?;
        }
        self.opt(&s.limit_offset, vis)?;
        self.opt(&s.limit_count, vis)?;
        Ok(output)
    }

    /// Verifies one FROM item and returns the relations it puts in scope, and whether it merges
    /// columns (a USING or NATURAL join). `plain` is what the item sees, `lateral` what it sees
    /// if it is LATERAL (the items before it too).
    fn relation(
        &self,
        f: &pb::Node,
        plain: &Scope<'_>,
        lateral: &Scope<'_>,
    ) -> Result<(Vec<Rel>, bool), String> {
        match &f.node {
            Some(N::RangeVar(rv)) => {
                if rv.schemaname.is_empty() && rv.catalogname.is_empty() {
                    let Some(cte) = plain.cte(&rv.relname) else {
                        return Err(format!("the unqualified relation {}", rv.relname));
                    };
                    let name = match &rv.alias {
                        Some(a) => a.aliasname.as_str(),
                        None => rv.relname.as_str(),
                    };
                    self.spend(cte.columns.len())?;
                    let cols = Cols {
                        names: cte.columns.clone(),
                        exact: cte.exact,
                    };
                    return Ok((vec![Rel::named(name, cols, rv.alias.as_ref())?], false));
                }
                match self.rule(rv) {
                    Some(rule) => Err(format!("table {} read without its wrapper", rule.name)),
                    None => Err(format!(
                        "the undeclared relation {}.{}",
                        rv.schemaname, rv.relname
                    )),
                }
            }
            Some(N::RangeSubselect(r)) => {
                let Some(N::SelectStmt(sub)) = node(&r.subquery) else {
                    return Err("a derived table that is not a SELECT".into());
                };
                let mut wraps = None;
                let cols = match self.wrapped_rule(sub) {
                    Some(rule) => {
                        self.wrapper(sub, rule, if r.lateral { lateral } else { plain })?;
                        wraps = Some(rule.name.clone());
                        let names = sub
                            .target_list
                            .iter()
                            .map(|t| match &t.node {
                                Some(N::ResTarget(r)) if !r.name.is_empty() => r.name.clone(),
                                Some(N::ResTarget(r)) => {
                                    figure_colname(node(&r.val)).unwrap_or_default()
                                }
                                _ => String::new(),
                            })
                            .collect();
                        Cols { names, exact: true }
                    }
                    None => self.select(sub, if r.lateral { lateral } else { plain })?,
                };
                let rels = match &r.alias {
                    Some(a) => {
                        let mut rel = Rel::named(&a.aliasname, cols, Some(a))?;
                        if a.colnames.is_empty() {
                            rel.wraps = wraps;
                        }
                        vec![rel]
                    }
                    None => Vec::new(),
                };
                Ok((rels, false))
            }
            Some(N::JoinExpr(j)) => {
                if j.join_using_alias.is_some() || j.alias.is_some() {
                    return Err("an aliased join".into());
                }
                let (Some(l), Some(r)) = (&j.larg, &j.rarg) else {
                    return Err("a join without both sides".into());
                };
                let (mut rels, ml) = self.relation(l, plain, lateral)?;
                // A LATERAL item on the right also sees the left side.
                let right_lateral = Scope::level(lateral, &[], &rels);
                let (right, mr) = self.relation(r, plain, &right_lateral)?;
                rels.extend(right);
                if names(&j.using_clause).is_none() {
                    return Err("a USING list of an unexpected kind".into());
                }
                // ON sees the join's own sides and the levels outside, not the items beside it.
                let on = Scope::level(plain, &[], &rels);
                self.opt(&j.quals, &on)?;
                let merged = ml || mr || j.is_natural || !j.using_clause.is_empty();
                Ok((rels, merged))
            }
            Some(N::RangeFunction(rf)) => {
                // One set-returning function of the allow-list, not ROWS FROM, no column
                // definition list. A function in FROM sees the items before it, LATERAL or not.
                if rf.is_rowsfrom || !rf.coldeflist.is_empty() {
                    return Err("ROWS FROM or a column definition list".into());
                }
                let [item] = rf.functions.as_slice() else {
                    return Err("more than one function in a FROM item".into());
                };
                let Some(N::List(pair)) = &item.node else {
                    return Err("a FROM function of an unexpected kind".into());
                };
                let (call, defs) = match pair.items.as_slice() {
                    [call] => (call, None),
                    [call, defs] => (call, Some(defs)),
                    _ => return Err("a FROM function of an unexpected kind".into()),
                };
                if defs.is_some_and(|d| match &d.node {
                    None => false,
                    Some(N::List(l)) => !l.items.is_empty(),
                    Some(_) => true,
                }) {
                    return Err("a column definition list".into());
                }
                let Some(N::FuncCall(f)) = &call.node else {
                    return Err("a FROM function of an unexpected kind".into());
                };
                let name = match names(&f.funcname).as_deref() {
                    Some([name]) if functions::TABLE_FUNCTIONS.contains(name) => name.to_string(),
                    _ => return Err("a table function outside the allow-list".into()),
                };
                if !f.agg_order.is_empty()
                    || f.agg_filter.is_some()
                    || f.over.is_some()
                    || f.agg_star
                    || f.agg_distinct
                    || f.agg_within_group
                {
                    return Err(format!("the table function {name} with aggregate clauses"));
                }
                self.expr(call, lateral)?;
                // Its columns: one, named by the alias (or the function) for a function of one
                // argument (every listed one returns a scalar), and `ordinality`; unknown for
                // `unnest` of several arrays (a qualified reference to them is refused).
                let single = f.args.len() == 1 || name != "unnest";
                let item = match &rf.alias {
                    Some(a) => a.aliasname.clone(),
                    None => name.clone(),
                };
                let mut columns = Vec::new();
                if single {
                    columns.push(item.clone());
                    if rf.ordinality {
                        columns.push("ordinality".to_string());
                    }
                }
                let cols = Cols {
                    names: columns,
                    exact: single,
                };
                Ok((vec![Rel::named(&item, cols, rf.alias.as_ref())?], false))
            }
            _ => Err("a FROM item outside the allow-list".into()),
        }
    }

    /// The rule of a derived table that reads one declared table: it must then be exactly that
    /// table's wrapper.
    fn wrapped_rule(&self, sub: &pb::SelectStmt) -> Option<&'a TableRule> {
        let [item] = sub.from_clause.as_slice() else {
            return None;
        };
        let rv = wrapped_table(item)?;
        if rv.schemaname.is_empty() {
            return None;
        }
        self.rule(rv)
    }

    fn wrapper(&self, s: &pb::SelectStmt, rule: &TableRule, outer: &Scope<'_>) -> V {
        let bad = |what: &str| Err(format!("the wrapper of {} has {what}", rule.name));
        if !rule.readable_by(self.groups) {
            return Err(format!("table {} is not granted to the caller", rule.name));
        }
        if !select_list_from_where(s) {
            return bad("extra clauses");
        }
        if s.limit_option == pb::LimitOption::WithTies as i32 {
            return bad("a limit option");
        }
        let fenced = matches!(node(&s.limit_offset), Some(N::AConst(c))
            if !c.isnull && matches!(&c.val, Some(pb::a_const::Val::Ival(i)) if i.ival == 0));
        let protected = matches!(rule.access, Access::Protected { .. });
        let filtered = rule.filters_for(self.groups).next().is_some();
        let want_fence = protected && (self.catalog.fenced() || filtered);
        if want_fence && !fenced {
            return bad("no OFFSET 0 fence");
        }
        if !want_fence && s.limit_offset.is_some() {
            return bad("an OFFSET");
        }
        let [item] = s.from_clause.as_slice() else {
            return bad("more than one relation");
        };
        match wrapped_table(item) {
            Some(rv) if rv.alias.is_none() && rv.inh => {}
            _ => return bad("an alias or ONLY on its table"),
        }
        // The projection, as PostgreSQL reads it, must be the caller's view of the table.
        let expected = self.expected_projection(rule)?;
        let actual = deparse_target_list(&s.target_list)?;
        if actual != expected {
            return bad("a projection other than the caller's granted columns");
        }
        // The predicate.
        let mut conjuncts = Vec::new();
        if let Some(w) = node(&s.where_clause) {
            flatten_and(w, &mut conjuncts);
        }
        let tenant_column = match &rule.access {
            Access::Protected { tenant_column } => tenant_column,
            Access::Public => {
                return if conjuncts.is_empty() {
                    Ok(())
                } else {
                    bad("a predicate")
                };
            }
        };
        let Some((first, rest)) = conjuncts.split_first() else {
            return bad("no tenant predicate");
        };
        if !self.is_tenant_predicate(first, tenant_column) {
            return bad("a first conjunct that is not the caller's tenant predicate");
        }
        // Exactly the row filters the table declares for the caller, in order.
        let filters = crate::filter::expected(
            self.catalog,
            rule,
            self.groups,
            self.binding,
            self.attributes,
        )?;
        if rest.len() < filters.len() {
            return bad("fewer row filters than the table declares for the caller");
        }
        let (actual, rest) = rest.split_at(filters.len());
        for (a, f) in actual.iter().zip(&filters) {
            if deparse_where(a)? != expected_where(f)? {
                return bad("other row filters than the table declares for the caller");
            }
        }
        if !want_fence && !rest.is_empty() {
            return bad("a predicate beside the tenant's (nothing is copied without a fence)");
        }
        for c in rest {
            if !self.is_copied(c, rule)
                && !self.is_correlated_copy(c, rule, outer)
                && !self.is_copied_in(c, rule)?
            {
                return bad("a predicate beside the tenant's that is not a copied comparison");
            }
        }
        Ok(())
    }

    fn expected_projection(&self, rule: &TableRule) -> Result<String, String> {
        let key = rule.name.to_string();
        if let Some(known) = self.expected.borrow().get(&key) {
            return Ok(known.clone());
        }
        let text = self.expected_projection_uncached(rule)?;
        self.expected.borrow_mut().insert(key, text.clone());
        Ok(text)
    }

    fn expected_projection_uncached(&self, rule: &TableRule) -> Result<String, String> {
        let d = Dialect::Postgres;
        let items = mask::projection(d, &rule.view(self.groups)).map_err(|e| e.to_string())?;
        let text = format!(
            "SELECT {} FROM \"x\"",
            crate::print::select_items(&items, d).map_err(|e| e.to_string())?
        );
        let parsed = pg_query::parse(&text, 0).map_err(|e| format!("expected projection: {e}"))?;
        match parsed.protobuf.stmts.first().and_then(|r| node(&r.stmt)) {
            Some(N::SelectStmt(s)) => deparse_target_list(&s.target_list),
            _ => Err("expected projection: not a SELECT".into()),
        }
    }

    fn is_tenant_predicate(&self, e: &N, tenant_column: &str) -> bool {
        let N::AExpr(a) = e else {
            return false;
        };
        if a.kind != pb::AExprKind::AexprOp as i32 || names(&a.name).as_deref() != Some(&["="]) {
            return false;
        }
        let column_ok = matches!(node(&a.lexpr), Some(N::ColumnRef(c))
            if names(&c.fields).as_deref() == Some(&[tenant_column]));
        let value_ok = match (node(&a.rexpr), self.binding) {
            (Some(N::ParamRef(p)), TenantBinding::Placeholder { text, .. }) => {
                format!("${}", p.number) == *text
            }
            (Some(N::AConst(c)), TenantBinding::Literal(t)) => {
                matches!(&c.val, Some(pb::a_const::Val::Sval(s)) if &s.sval == t)
            }
            _ => false,
        };
        column_ok && value_ok
    }

    /// `"<granted unmasked column>" <comparison> <value>` or `… BETWEEN <value> AND <value>`,
    /// a value being a constant or a caller parameter (see `pushdown`).
    fn is_copied(&self, e: &N, rule: &TableRule) -> bool {
        let N::AExpr(a) = e else {
            return false;
        };
        let unmasked = |n: Option<&N>| match n {
            Some(N::ColumnRef(c)) => match names(&c.fields).as_deref() {
                Some([col]) => rule
                    .view(self.groups)
                    .iter()
                    .any(|v| v.mask.is_none() && v.name == *col),
                _ => false,
            },
            _ => false,
        };
        // A constant, or one of the caller's own parameters (never the tenant's).
        let caller = self.binding.caller();
        let constant = |n: Option<&N>| match n {
            Some(N::AConst(c)) => {
                !c.isnull
                    && matches!(
                        c.val,
                        Some(
                            pb::a_const::Val::Ival(_)
                                | pb::a_const::Val::Fval(_)
                                | pb::a_const::Val::Sval(_)
                        )
                    )
            }
            // Occurring once in the caller's statement, plus this copy (see `pushdown`).
            Some(N::ParamRef(p)) => {
                caller.index(&format!("${}", p.number)).is_some()
                    && usize::try_from(p.number)
                        .ok()
                        .and_then(|i| self.param_occurrences.get(i))
                        .is_some_and(|n| *n == crate::pushdown::COPIED_PARAM_OCCURRENCES)
            }
            _ => false,
        };
        // A typed date or time literal (`DATE '…'` reads as a cast of a string) of the
        // column's declared type.
        let declared = match node(&a.lexpr) {
            Some(N::ColumnRef(c)) => match names(&c.fields).as_deref() {
                Some([col]) => rule.types.get(*col).copied(),
                _ => None,
            },
            _ => None,
        };
        let literal = |n: Option<&N>| {
            let Some(N::TypeCast(t)) = n else {
                return false;
            };
            let string = matches!(node(&t.arg), Some(N::AConst(c))
                if !c.isnull && matches!(c.val, Some(pb::a_const::Val::Sval(_))));
            let ty = t.type_name.as_ref().and_then(|tn| {
                if !tn.typmods.is_empty() || !tn.array_bounds.is_empty() || tn.setof {
                    return None;
                }
                // (`DATE '…'` reads as the type `date`, `TIMESTAMP '…'` as `pg_catalog`'s, as
                // the cast allow-list reads them.)
                match names(&tn.names).as_deref() {
                    Some(["date"] | ["pg_catalog", "date"]) => {
                        Some(crate::leakproof::ColumnType::Date)
                    }
                    Some(["timestamp"] | ["pg_catalog", "timestamp"]) => {
                        Some(crate::leakproof::ColumnType::Timestamp)
                    }
                    Some(["timestamptz"] | ["pg_catalog", "timestamptz"]) => {
                        Some(crate::leakproof::ColumnType::TimestampTz)
                    }
                    _ => None,
                }
            });
            string && declared.is_some() && ty == declared
        };
        let constant = |n: Option<&N>| constant(n) || literal(n);
        let op = names(&a.name);
        if a.kind == pb::AExprKind::AexprOp as i32 {
            matches!(op.as_deref(), Some([o]) if COMPARISONS.contains(o))
                && unmasked(node(&a.lexpr))
                && constant(node(&a.rexpr))
        } else if a.kind == pb::AExprKind::AexprBetween as i32 {
            let bounds = match node(&a.rexpr) {
                Some(N::List(l)) => {
                    l.items.len() == 2 && l.items.iter().all(|i| constant(i.node.as_ref()))
                }
                _ => false,
            };
            unmasked(node(&a.lexpr)) && bounds
        } else {
            false
        }
    }

    /// `"<column>" <comparison> "<item>"."<column>"` (see `pushdown`): both columns granted,
    /// unmasked and of declared, leakproof-comparable types, `<item>` resolving — from inside
    /// the wrapper, as PostgreSQL resolves it: past the table inside, in the levels outside
    /// the wrapper's own — to the wrapper of a declared table.
    fn is_correlated_copy(&self, e: &N, rule: &TableRule, outer: &Scope<'_>) -> bool {
        let N::AExpr(a) = e else {
            return false;
        };
        if a.kind != pb::AExprKind::AexprOp as i32
            || !matches!(names(&a.name).as_deref(), Some([o]) if COMPARISONS.contains(o))
        {
            return false;
        }
        let (Some(N::ColumnRef(l)), Some(N::ColumnRef(r))) = (node(&a.lexpr), node(&a.rexpr))
        else {
            return false;
        };
        let (Some(l), Some(r)) = (names(&l.fields), names(&r.fields)) else {
            return false;
        };
        let ([mine], [item, theirs]) = (l.as_slice(), r.as_slice()) else {
            return false;
        };
        if *item == rule.name.table {
            return false;
        }
        let Some(rel) = outer.rel(item) else {
            return false;
        };
        let Some(other) = rel
            .wraps
            .as_ref()
            .and_then(|n| self.catalog.tables().iter().find(|t| t.name == *n))
        else {
            return false;
        };
        let typed = |r: &TableRule, c: &str| r.unmasked_type(self.groups, c);
        rel.columns.iter().any(|c| c == theirs)
            && match (typed(rule, mine), typed(other, theirs)) {
                (Some(x), Some(y)) => crate::leakproof::comparable(x, y),
                _ => false,
            }
    }

    /// `"<column>" IN (SELECT "<item>"."<column>" FROM <wrapper> AS "<item>" [WHERE …])` (see
    /// `pushdown`): the compared columns granted, unmasked, of declared leakproof-comparable
    /// types, and the sub-query closed — walked with nothing outside it in scope, every
    /// column reference qualified (so it reads only its own wrapper), no parameter, no
    /// sub-query. `Err` when it has that form but does not verify.
    fn is_copied_in(&self, e: &N, rule: &TableRule) -> Result<bool, String> {
        let N::SubLink(l) = e else {
            return Ok(false);
        };
        if l.sub_link_type != pb::SubLinkType::AnySublink as i32 || !l.oper_name.is_empty() {
            return Ok(false);
        }
        let Some(N::ColumnRef(c)) = node(&l.testexpr) else {
            return Ok(false);
        };
        let Some(mine) = names(&c.fields) else {
            return Ok(false);
        };
        let (Some(N::SelectStmt(sub)), [mine]) = (node(&l.subselect), mine.as_slice()) else {
            return Ok(false);
        };
        if !select_list_from_where(sub) || sub.limit_offset.is_some() {
            return Ok(false);
        }
        let [from] = sub.from_clause.as_slice() else {
            return Ok(false);
        };
        let Some(N::RangeSubselect(r)) = &from.node else {
            return Ok(false);
        };
        let (Some(alias), Some(N::SelectStmt(w)), false) = (&r.alias, node(&r.subquery), r.lateral)
        else {
            return Ok(false);
        };
        let Some(other) = self.wrapped_rule(w) else {
            return Ok(false);
        };
        let [target] = sub.target_list.as_slice() else {
            return Ok(false);
        };
        let Some(N::ResTarget(t)) = &target.node else {
            return Ok(false);
        };
        let Some(N::ColumnRef(tc)) = node(&t.val) else {
            return Ok(false);
        };
        let theirs = match names(&tc.fields).as_deref() {
            Some([item, col]) if *item == alias.aliasname && t.name.is_empty() => col.to_string(),
            _ => return Ok(false),
        };
        if !alias.colnames.is_empty() {
            return Ok(false);
        }
        let typed = |r: &TableRule, c: &str| r.unmasked_type(self.groups, c);
        match (typed(rule, mine), typed(other, &theirs)) {
            (Some(x), Some(y)) if crate::leakproof::comparable(x, y) => {}
            _ => return Ok(false),
        }
        let before = self.closed.replace(true);
        let walked = self.select(sub, &Scope::ROOT);
        self.closed.set(before);
        walked.map(|_| true)
    }

    fn opt(&self, n: &Option<Box<pb::Node>>, vis: &Scope<'_>) -> V {
        match n {
            Some(b) => self.expr(b, vis),
            None => Ok(()),
        }
    }

    fn all(&self, list: &[pb::Node], vis: &Scope<'_>) -> V {
        list.iter().try_for_each(|n| self.expr(n, vis))
    }

    fn sort_by(&self, n: &pb::Node, vis: &Scope<'_>) -> V {
        match &n.node {
            Some(N::SortBy(s)) if s.use_op.is_empty() => self.opt(&s.node, vis),
            _ => Err("an ORDER BY item of an unexpected kind".into()),
        }
    }

    fn window(&self, w: &pb::WindowDef, vis: &Scope<'_>) -> V {
        self.all(&w.partition_clause, vis)?;
        for o in &w.order_clause {
            self.sort_by(o, vis)?;
        }
        self.opt(&w.start_offset, vis)?;
        self.opt(&w.end_offset, vis)
    }

    fn function_name(&self, f: &pb::FuncCall) -> V {
        let allowed = match names(&f.funcname).as_deref() {
            Some([name]) => functions::is_allowed(Dialect::Postgres, name),
            Some(["pg_catalog", name]) => SQL_SYNTAX_FUNCTIONS.contains(name),
            _ => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "the function {}",
                names(&f.funcname).map(|n| n.join(".")).unwrap_or_default()
            ))
        }
    }

    fn type_name(&self, t: &pb::TypeName) -> V {
        let ok = !t.setof
            && !t.pct_type
            && t.array_bounds.is_empty()
            && match names(&t.names).as_deref() {
                Some([name]) | Some(["pg_catalog", name]) => TYPES.contains(name),
                _ => false,
            }
            && t.typmods
                .iter()
                .all(|m| matches!(&m.node, Some(N::AConst(_))));
        if ok {
            Ok(())
        } else {
            Err("a cast to a type outside the allow-list".into())
        }
    }

    fn expr(&self, n: &pb::Node, vis: &Scope<'_>) -> V {
        let Some(e) = &n.node else {
            return Err("an empty expression".into());
        };
        match e {
            N::ColumnRef(c) => {
                let fields: Vec<Option<&str>> = c
                    .fields
                    .iter()
                    .map(|f| match &f.node {
                        Some(N::String(s)) => Ok(Some(s.sval.as_str())),
                        Some(N::AStar(_)) => Ok(None),
                        _ => Err("a column reference of an unexpected kind"),
                    })
                    .collect::<Result<_, _>>()?;
                match fields.as_slice() {
                    [None] | [Some(_)] if self.closed.get() => {
                        Err("an unqualified reference in a sub-query copied into a wrapper".into())
                    }
                    [None] => Ok(()),
                    [Some(col)] => no_system_column(col),
                    [Some(q), last] => {
                        // PostgreSQL reads `q.f` as the call `f(q)` (or a cast of the row to the
                        // type `f`) when `q` has no column `f`: the column must be there.
                        let rel = vis.rel(q).ok_or_else(|| {
                            format!("{q}.* or {q}.<column>: no relation {q} in scope")
                        })?;
                        match last {
                            None => Ok(()),
                            Some(col) => {
                                no_system_column(col)?;
                                if rel.columns.iter().any(|c| c == col) {
                                    Ok(())
                                } else {
                                    Err(format!(
                                        "{q}.{col}, and {q} has no column {col} (PostgreSQL would read it as a function call)"
                                    ))
                                }
                            }
                        }
                    }
                    _ => Err("a column reference with more than two parts".into()),
                }
            }
            N::AConst(c) => match &c.val {
                Some(pb::a_const::Val::Bsval(_)) => Err("a bit-string literal".into()),
                _ => Ok(()),
            },
            // Outside the tenant wrappers, only the caller's own parameters (never the tenant's).
            N::ParamRef(_) if self.closed.get() => {
                Err("a parameter in a sub-query copied into a wrapper".into())
            }
            N::ParamRef(p) => {
                if self
                    .binding
                    .caller()
                    .index(&format!("${}", p.number))
                    .is_some()
                {
                    Ok(())
                } else {
                    Err("a bind parameter outside a tenant wrapper".into())
                }
            }
            N::TypeCast(t) => {
                match &t.type_name {
                    Some(tn) => self.type_name(tn)?,
                    None => return Err("a cast without a type".into()),
                }
                self.opt(&t.arg, vis)
            }
            N::FuncCall(f) => {
                self.function_name(f)?;
                if f.func_variadic {
                    return Err("VARIADIC".into());
                }
                for a in &f.args {
                    if matches!(a.node, Some(N::NamedArgExpr(_))) {
                        return Err("named function arguments".into());
                    }
                    self.expr(a, vis)?;
                }
                for o in &f.agg_order {
                    self.sort_by(o, vis)?;
                }
                self.opt(&f.agg_filter, vis)?;
                if let Some(w) = &f.over {
                    self.window(w, vis)?;
                }
                Ok(())
            }
            N::AExpr(a) => {
                let kind =
                    pb::AExprKind::try_from(a.kind).map_err(|_| "an unknown operator kind")?;
                let op = names(&a.name).ok_or("an operator of an unexpected kind")?;
                let ok = match kind {
                    pb::AExprKind::AexprOp
                    | pb::AExprKind::AexprOpAny
                    | pb::AExprKind::AexprOpAll => {
                        matches!(op.as_slice(), [o] if OPERATORS.contains(o))
                    }
                    pb::AExprKind::AexprDistinct
                    | pb::AExprKind::AexprNotDistinct
                    | pb::AExprKind::AexprIn => matches!(op.as_slice(), ["="] | ["<>"]),
                    pb::AExprKind::AexprNullif => {
                        functions::is_allowed(Dialect::Postgres, "nullif")
                    }
                    pb::AExprKind::AexprLike | pb::AExprKind::AexprIlike => {
                        matches!(op.as_slice(), ["~~"] | ["!~~"] | ["~~*"] | ["!~~*"])
                    }
                    pb::AExprKind::AexprSimilar => matches!(op.as_slice(), ["~"] | ["!~"]),
                    pb::AExprKind::AexprBetween
                    | pb::AExprKind::AexprNotBetween
                    | pb::AExprKind::AexprBetweenSym
                    | pb::AExprKind::AexprNotBetweenSym => true,
                    pb::AExprKind::Undefined => false,
                };
                if !ok {
                    return Err(format!("the operator {}", op.join(".")));
                }
                self.opt(&a.lexpr, vis)?;
                self.opt(&a.rexpr, vis)
            }
            N::BoolExpr(b) => self.all(&b.args, vis),
            N::NullTest(t) => self.opt(&t.arg, vis),
            N::BooleanTest(t) => self.opt(&t.arg, vis),
            N::SubLink(_) if self.closed.get() => {
                Err("a sub-query inside a sub-query copied into a wrapper".into())
            }
            N::SubLink(s) => {
                let kind = pb::SubLinkType::try_from(s.sub_link_type)
                    .map_err(|_| "an unknown sub-query kind")?;
                if !matches!(
                    kind,
                    pb::SubLinkType::ExistsSublink
                        | pb::SubLinkType::AllSublink
                        | pb::SubLinkType::AnySublink
                        | pb::SubLinkType::ExprSublink
                        | pb::SubLinkType::ArraySublink
                ) {
                    return Err("a sub-query of an unexpected kind".into());
                }
                match names(&s.oper_name).as_deref() {
                    Some([]) => {}
                    Some([o]) if OPERATORS.contains(o) => {}
                    _ => return Err("a sub-query operator outside the allow-list".into()),
                }
                self.opt(&s.testexpr, vis)?;
                match node(&s.subselect) {
                    Some(N::SelectStmt(sub)) => self.select(sub, vis).map(drop),
                    _ => Err("a sub-query that is not a SELECT".into()),
                }
            }
            N::CaseExpr(c) => {
                self.opt(&c.arg, vis)?;
                for w in &c.args {
                    match &w.node {
                        Some(N::CaseWhen(w)) => {
                            self.opt(&w.expr, vis)?;
                            self.opt(&w.result, vis)?;
                        }
                        _ => return Err("a CASE arm of an unexpected kind".into()),
                    }
                }
                self.opt(&c.defresult, vis)
            }
            N::CoalesceExpr(c) if functions::is_allowed(Dialect::Postgres, "coalesce") => {
                self.all(&c.args, vis)
            }
            N::MinMaxExpr(m)
                if functions::is_allowed(Dialect::Postgres, "greatest")
                    && functions::is_allowed(Dialect::Postgres, "least") =>
            {
                self.all(&m.args, vis)
            }
            N::SqlvalueFunction(f) => {
                use pb::SqlValueFunctionOp as O;
                match O::try_from(f.op) {
                    Ok(
                        O::SvfopCurrentDate
                        | O::SvfopCurrentTime
                        | O::SvfopCurrentTimeN
                        | O::SvfopCurrentTimestamp
                        | O::SvfopCurrentTimestampN
                        | O::SvfopLocaltime
                        | O::SvfopLocaltimeN
                        | O::SvfopLocaltimestamp
                        | O::SvfopLocaltimestampN,
                    ) => Ok(()),
                    _ => Err("a session-information function".into()),
                }
            }
            N::RowExpr(r) => self.all(&r.args, vis),
            N::AArrayExpr(a) => self.all(&a.elements, vis),
            N::AIndirection(i) => {
                for ind in &i.indirection {
                    match &ind.node {
                        Some(N::AIndices(x)) => {
                            self.opt(&x.lidx, vis)?;
                            self.opt(&x.uidx, vis)?;
                        }
                        _ => return Err("a field selection".into()),
                    }
                }
                self.opt(&i.arg, vis)
            }
            N::List(l) => self.all(&l.items, vis),
            N::GroupingSet(g) => self.all(&g.content, vis),
            N::GroupingFunc(g) if functions::is_allowed(Dialect::Postgres, "grouping") => {
                self.all(&g.args, vis)
            }
            _ => Err("an expression outside the allow-list".into()),
        }
    }
}

/// Whether `s` is a plain `SELECT <list> FROM … [WHERE …]` (an `OFFSET` aside, which the
/// callers judge): no set operation, WITH, INTO, DISTINCT, grouping, window, VALUES, ORDER BY,
/// LIMIT or locking clause.
fn select_list_from_where(s: &pb::SelectStmt) -> bool {
    s.op == pb::SetOperation::SetopNone as i32
        && s.with_clause.is_none()
        && s.into_clause.is_none()
        && s.distinct_clause.is_empty()
        && s.group_clause.is_empty()
        && !s.group_distinct
        && s.having_clause.is_none()
        && s.window_clause.is_empty()
        && s.values_lists.is_empty()
        && s.sort_clause.is_empty()
        && s.limit_count.is_none()
        && s.locking_clause.is_empty()
        && s.larg.is_none()
        && s.rarg.is_none()
}

fn no_system_column(col: &str) -> V {
    if is_system_column(Dialect::Postgres, col) {
        Err(format!("the system column {col}"))
    } else {
        Ok(())
    }
}

fn flatten_and<'n>(e: &'n N, out: &mut Vec<&'n N>) {
    match e {
        N::BoolExpr(b) if b.boolop == pb::BoolExprType::AndExpr as i32 => {
            for a in &b.args {
                if let Some(n) = &a.node {
                    flatten_and(n, out);
                }
            }
        }
        other => out.push(other),
    }
}

/// PostgreSQL's own text for `SELECT WHERE <e>` (locations and formatting dropped), for
/// comparing a conjunct with the one expected.
fn deparse_where(e: &N) -> Result<String, String> {
    deparse(pb::SelectStmt {
        where_clause: Some(Box::new(pb::Node {
            node: Some(e.clone()),
        })),
        ..Default::default()
    })
}

/// [`deparse_where`] of the conjunct a row filter expects, as PostgreSQL parses sqlparser's
/// text of it.
fn expected_where(e: &sqlparser::ast::Expr) -> Result<String, String> {
    let parsed = pg_query::parse(&format!("SELECT WHERE {e}"), 0)
        .map_err(|e| format!("expected row filter: {e}"))?;
    match parsed.protobuf.stmts.first().and_then(|r| node(&r.stmt)) {
        Some(N::SelectStmt(s)) => match node(&s.where_clause) {
            Some(w) => deparse_where(w),
            None => Err("expected row filter: no WHERE".into()),
        },
        _ => Err("expected row filter: not a SELECT".into()),
    }
}

/// PostgreSQL's own text for a select list (locations and formatting dropped), for comparing two
/// parse trees.
fn deparse_target_list(list: &[pb::Node]) -> Result<String, String> {
    deparse(pb::SelectStmt {
        target_list: list.to_vec(),
        ..Default::default()
    })
}

/// PostgreSQL's text of a plain `SELECT` made of the parts `stmt` sets.
fn deparse(stmt: pb::SelectStmt) -> Result<String, String> {
    let stmt = pb::SelectStmt {
        op: pb::SetOperation::SetopNone as i32,
        limit_option: pb::LimitOption::Default as i32,
        ..stmt
    };
    N::SelectStmt(Box::new(stmt))
        .deparse(Default::default())
        .map_err(|e| format!("deparse: {e}"))
}

/// The table a wrapper reads: its single FROM item, or the table under the one sampling
/// clause sluice emits there, `TABLESAMPLE bernoulli (<number>)` (no REPEATABLE: see
/// `rewrite::check_sample`). Any other sampling clause makes the item no wrapper (and so
/// refused as a FROM item outside the allow-list).
fn wrapped_table(item: &pb::Node) -> Option<&pb::RangeVar> {
    match &item.node {
        Some(N::RangeVar(rv)) => Some(rv),
        Some(N::RangeTableSample(ts)) => {
            let method = names(&ts.method)?;
            let number = matches!(ts.args.as_slice(), [a] if matches!(&a.node,
                Some(N::AConst(c)) if !c.isnull
                    && matches!(c.val, Some(pb::a_const::Val::Ival(_) | pb::a_const::Val::Fval(_)))));
            if method.as_slice() != ["bernoulli"] || !number || ts.repeatable.is_some() {
                return None;
            }
            match node(&ts.relation) {
                Some(N::RangeVar(rv)) => Some(rv),
                _ => None,
            }
        }
        _ => None,
    }
}
