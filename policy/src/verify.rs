//! The verifier: re-parses the rewritten SQL and proves, independently of the rewriter's walk,
//! that every base relation is either public, a CTE in scope, or read through the exact tenant
//! wrapper, and that nothing outside the allow-lists remains. It walks with sqlparser's generic
//! visitor, which reaches every node, so a place the rewriter forgot to look is still checked.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, GroupByExpr, ObjectName, ObjectNamePart, Query, Select, SelectFlavor,
    SetExpr, Statement, TableFactor, UnaryOperator, Value, Visit, Visitor,
};

use crate::catalog::{Access, Catalog, TableRule};
use crate::dialect::Dialect;
use crate::error::PolicyError;
use crate::rewrite::fence;
use crate::{Caller, MAX_PARSE_DEPTH, TenantBinding, functions, mask, outer_limit};

/// Verifies rewritten SQL on sqlparser's tree. Returns the refusal reason on failure.
pub(crate) fn verify_tree(
    sql: &str,
    catalog: &Catalog,
    binding: &TenantBinding,
    caller: &Caller<'_>,
) -> Result<(), PolicyError> {
    let d = catalog.dialect();
    crate::print::check_text(sql, d)?;
    // The printer adds parentheses around compound operands: leave room for them (the input's
    // depth is bounded already, and this runs on the policy's stack).
    let tokens = sql.len() / 2 + 1;
    let statements =
        crate::limits::parse_metered(sql, d.parser_dialect(), tokens, MAX_PARSE_DEPTH * 4)
            .map_err(|e| PolicyError::Verification(format!("rewritten SQL does not parse: {e}")))?;
    let [statement] = statements.as_slice() else {
        return Err(PolicyError::Verification(
            "not exactly one statement".into(),
        ));
    };
    // The printed form is a fixed point: what sqlparser reads back prints as the same text, so
    // the tree checked below is the tree that was printed.
    match crate::print::statement(statement, d, binding) {
        Ok(again) if again == sql => {}
        _ => {
            return Err(PolicyError::Verification(
                "the printed SQL does not read back as itself".into(),
            ));
        }
    }
    if let (Some(cap), Statement::Query(q)) = (caller.row_limit, statement)
        && outer_limit(q).is_none_or(|n| n > cap)
    {
        return Err(PolicyError::Verification(
            "the outermost query is not capped".into(),
        ));
    }
    let mut v = Verifier {
        param_occurrences: binding.caller().occurrences(statement),
        catalog,
        binding,
        groups: caller.groups,
        attributes: caller.attributes,
        scopes: Vec::new(),
        cte_bodies: HashMap::new(),
        wrappers: Vec::new(),
        nested: std::cell::RefCell::new(Vec::new()),
        function_names: Vec::new(),
        items: Vec::new(),
    };
    if let ControlFlow::Break(reason) = statement.visit(&mut v) {
        return Err(PolicyError::Verification(reason));
    }
    Ok(())
}

/// Verifies rewritten SQL with both verifiers (PostgreSQL) or sqlparser's alone.
pub(crate) fn verify(
    sql: &str,
    catalog: &Catalog,
    binding: &TenantBinding,
    caller: &Caller<'_>,
) -> Result<(), PolicyError> {
    verify_tree(sql, catalog, binding, caller)?;
    // PostgreSQL: the same text, proved again on PostgreSQL's own parse tree.
    if catalog.dialect() == crate::Dialect::Postgres {
        crate::pgverify::verify(sql, catalog, binding, caller)?;
    }
    Ok(())
}

struct Verifier<'a> {
    /// How often each caller parameter occurs in the statement (`pushdown::is_copied`).
    param_occurrences: Vec<u32>,
    catalog: &'a Catalog,
    binding: &'a TenantBinding,
    groups: &'a [String],
    /// The caller's attributes (the row filters' values).
    attributes: &'a crate::Attributes,
    /// Visible CTE names, one entry per query being visited.
    scopes: Vec<Vec<String>>,
    /// CTE body address -> the names visible inside that body.
    cte_bodies: HashMap<usize, Vec<String>>,
    /// The tenant wrappers being visited, innermost last: (the table factor's address, its
    /// rule). A wrapper inside another is allowed only as the one a copied `IN` sub-query
    /// reads (`nested`).
    wrappers: Vec<(usize, &'a TableRule)>,
    /// The addresses of the wrappers inside copied `IN` sub-queries ([`Verifier::is_copied_in`]).
    nested: std::cell::RefCell<Vec<usize>>,
    /// The addresses of the names of table functions visited (`generate_series(...)` parses
    /// as a table with arguments): not relations.
    function_names: Vec<usize>,
    /// The FROM items of each query being visited (of every arm of a set operation: an
    /// over-approximation of what a reference can reach), by name, with the declared table
    /// each wraps (`None` for anything else): what a correlated copy's qualifier may name.
    items: Vec<Vec<(String, Option<&'a TableRule>)>>,
}

fn addr<T>(x: &T) -> usize {
    x as *const T as usize
}

fn plain_parts(name: &ObjectName) -> Option<Vec<&sqlparser::ast::Ident>> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

impl<'a> Verifier<'a> {
    fn system_column(&self, i: &sqlparser::ast::Ident) -> bool {
        let d = self.catalog.dialect();
        crate::dialect::is_system_column(d, &d.normalize(i))
    }

    /// Whether `name` is a set-returning function a FROM clause may call (PostgreSQL only).
    fn table_function(&self, name: &ObjectName) -> bool {
        let d = self.catalog.dialect();
        match name.0.as_slice() {
            [ObjectNamePart::Identifier(i)] => {
                d == Dialect::Postgres
                    && functions::resolve(d, i)
                        .is_some_and(|n| functions::TABLE_FUNCTIONS.contains(&n.as_str()))
            }
            _ => false,
        }
    }

    /// The declared rule of a relation name exactly as sluice emits it (quoted, fully qualified).
    fn emitted_rule(&self, name: &ObjectName) -> Option<&'a TableRule> {
        let parts = plain_parts(name)?;
        let quote = self.catalog.dialect().quote();
        if parts.iter().any(|i| i.quote_style != Some(quote)) {
            return None;
        }
        let values: Vec<String> = parts.iter().map(|i| i.value.clone()).collect();
        self.catalog.by_emitted_name(&values)
    }

    /// The FROM items of a query body, every arm of a set operation included.
    fn body_items(&self, body: &SetExpr, out: &mut Vec<(String, Option<&'a TableRule>)>) {
        match body {
            SetExpr::Select(s) => {
                for twj in &s.from {
                    self.factor_items(&twj.relation, out);
                    for j in &twj.joins {
                        self.factor_items(&j.relation, out);
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.body_items(left, out);
                self.body_items(right, out);
            }
            _ => {}
        }
    }

    fn factor_items(&self, tf: &TableFactor, out: &mut Vec<(String, Option<&'a TableRule>)>) {
        let d = self.catalog.dialect();
        let named =
            |alias: &Option<sqlparser::ast::TableAlias>, fallback: Option<&ObjectName>| match (
                alias, fallback,
            ) {
                (Some(a), _) => Some(d.normalize(&a.name)),
                (None, Some(n)) => match n.0.last() {
                    Some(ObjectNamePart::Identifier(i)) => Some(d.normalize(i)),
                    _ => None,
                },
                (None, None) => None,
            };
        match tf {
            TableFactor::Table { name, alias, .. } | TableFactor::Function { name, alias, .. } => {
                if let Some(n) = named(alias, Some(name)) {
                    out.push((n, None));
                }
            }
            TableFactor::Derived {
                subquery,
                alias: Some(a),
                ..
            } => {
                let rule = a
                    .columns
                    .is_empty()
                    .then(|| self.wrapped_table(subquery))
                    .flatten();
                out.push((d.normalize(&a.name), rule));
            }
            TableFactor::NestedJoin {
                table_with_joins,
                alias,
            } => {
                if let Some(n) = named(alias, None) {
                    out.push((n, None));
                }
                self.factor_items(&table_with_joins.relation, out);
                for j in &table_with_joins.joins {
                    self.factor_items(&j.relation, out);
                }
            }
            TableFactor::UNNEST { alias, .. } => {
                out.push((
                    named(alias, None).unwrap_or_else(|| "unnest".to_string()),
                    None,
                ));
            }
            _ => {}
        }
    }

    /// The declared table a derived table reads as its only relation (whether it is exactly
    /// the wrapper is checked when it is visited).
    fn wrapped_table(&self, q: &Query) -> Option<&'a TableRule> {
        let SetExpr::Select(select) = q.body.as_ref() else {
            return None;
        };
        match select.from.as_slice() {
            [twj] if twj.joins.is_empty() => match &twj.relation {
                TableFactor::Table { name, .. } => self.emitted_rule(name),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether `e` is a correlated conjunct as the rewriter copies it into the wrapper of
    /// `rule`: `"<column>" <comparison> "<item>"."<column>"`, both columns granted, unmasked
    /// and of declared, leakproof-comparable types, where every FROM item named `<item>` in
    /// the enclosing queries is a wrapper of one and the same declared table (so whichever
    /// PostgreSQL resolves, the type is the declared one), and `<item>` is not the name of the
    /// table inside this wrapper.
    fn is_correlated_copy(&self, rule: &TableRule, e: &Expr) -> bool {
        let quote = self.catalog.dialect().quote();
        let Expr::BinaryOp { left, op, right } = e else {
            return false;
        };
        let (Expr::Identifier(mine), Expr::CompoundIdentifier(parts)) = (strip(left), strip(right))
        else {
            return false;
        };
        let [item, theirs] = parts.as_slice() else {
            return false;
        };
        if !crate::pushdown::comparison(op)
            || [mine, item, theirs]
                .iter()
                .any(|i| i.quote_style != Some(quote))
            || item.value == rule.name.table
        {
            return false;
        }
        let mut outer: Option<&TableRule> = None;
        for (name, r) in self.items.iter().flatten() {
            if *name != item.value {
                continue;
            }
            match (r, outer) {
                (Some(r), None) => outer = Some(r),
                (Some(r), Some(o)) if std::ptr::eq(*r, o) => {}
                _ => return false,
            }
        }
        let Some(outer) = outer else {
            return false;
        };
        let typed = |r: &TableRule, c: &str| r.unmasked_type(self.groups, c);
        match (typed(rule, &mine.value), typed(outer, &theirs.value)) {
            (Some(a), Some(b)) => crate::leakproof::comparable(a, b),
            _ => false,
        }
    }

    /// Whether `e` is a copied `IN` as the rewriter emits it into the wrapper of `rule`:
    /// `"<column>" IN (SELECT "<item>"."<column>" FROM <wrapper> AS "<item>" [WHERE …])`, the
    /// compared columns granted, unmasked and of declared leakproof-comparable types, the
    /// sub-query nothing else, and every column reference in its `WHERE` `"<item>"."<column>"`
    /// (so it reads only its own wrapper), no parameter, no sub-query. Records the inner
    /// wrapper as allowed inside this one.
    fn is_copied_in(&self, rule: &TableRule, e: &Expr) -> bool {
        let quote = self.catalog.dialect().quote();
        let Expr::InSubquery {
            expr,
            subquery,
            negated: false,
        } = e
        else {
            return false;
        };
        let Expr::Identifier(mine) = strip(expr) else {
            return false;
        };
        let Some((select, inner, alias)) = crate::pushdown::closed_shape(subquery) else {
            return false;
        };
        if alias.name.quote_style != Some(quote) {
            return false;
        }
        let Some(other) = self.wrapped_table(inner) else {
            return false;
        };
        let view = other.view(self.groups);
        // `"<item>"."<column>"`, a column of the inner wrapper: the column.
        let own = |e: &Expr| match e {
            Expr::CompoundIdentifier(p) => match p.as_slice() {
                [i, c]
                    if i.quote_style == Some(quote)
                        && c.quote_style == Some(quote)
                        && i.value == alias.name.value
                        && view.iter().any(|v| v.name == c.value) =>
                {
                    Some(c.value.clone())
                }
                _ => None,
            },
            _ => None,
        };
        let [sqlparser::ast::SelectItem::UnnamedExpr(selected)] = select.projection.as_slice()
        else {
            return false;
        };
        let Some(theirs) = own(selected) else {
            return false;
        };
        let typed = |r: &TableRule, c: &str| r.unmasked_type(self.groups, c);
        match (typed(rule, &mine.value), typed(other, &theirs)) {
            (Some(a), Some(b)) if crate::leakproof::comparable(a, b) => {}
            _ => return false,
        }
        if mine.quote_style != Some(quote) {
            return false;
        }
        let closed = sqlparser::ast::visit_expressions(&select.selection, |e: &Expr| match e {
            Expr::Identifier(_)
            | Expr::Subquery(_)
            | Expr::Exists { .. }
            | Expr::InSubquery { .. } => ControlFlow::Break(()),
            Expr::CompoundIdentifier(_) if own(e).is_none() => ControlFlow::Break(()),
            Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        });
        if closed.is_break() {
            return false;
        }
        if let Some(twj) = select.from.first() {
            self.nested.borrow_mut().push(addr(&twj.relation));
        }
        true
    }

    fn expected_filters(&self, rule: &TableRule) -> Result<Vec<Expr>, String> {
        crate::filter::expected(
            self.catalog,
            rule,
            self.groups,
            self.binding,
            self.attributes,
        )
    }

    /// If `q` reads a protected (or column-restricted public) table, checks that it is exactly
    /// the wrapper for this caller and returns its rule; `Ok(None)` for any other derived table.
    fn wrapper_rule(&self, q: &Query) -> Result<Option<&'a TableRule>, String> {
        let SetExpr::Select(select) = q.body.as_ref() else {
            return Ok(None);
        };
        let [twj] = select.from.as_slice() else {
            return Ok(None);
        };
        let TableFactor::Table { name, .. } = &twj.relation else {
            return Ok(None);
        };
        let Some(rule) = self.emitted_rule(name) else {
            return Ok(None);
        };
        let tenant_column = match &rule.access {
            Access::Protected { tenant_column } => Some(tenant_column),
            Access::Public => None,
        };
        if !rule.readable_by(self.groups) {
            return Err(format!("table {} is not granted to the caller", rule.name));
        }
        let bad = |what: &str| Err(format!("protected table {} read with {what}", rule.name));
        let Query {
            with,
            body: _,
            order_by,
            limit_clause,
            fetch,
            locks,
            for_clause,
            settings,
            format_clause,
            pipe_operators,
        } = q;
        let d = self.catalog.dialect();
        if with.is_some()
            || order_by.is_some()
            || *limit_clause != tenant_column.and_then(|_| fence(self.catalog, rule, self.groups))
            || fetch.is_some()
            || !locks.is_empty()
            || for_clause.is_some()
            || settings.is_some()
            || format_clause.is_some()
            || !pipe_operators.is_empty()
        {
            return bad("extra query clauses in its wrapper");
        }
        if !select_is_plain(select) || !twj.joins.is_empty() {
            return bad("extra clauses in its wrapper");
        }
        if let TableFactor::Table {
            name: _,
            alias: None,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample,
            index_hints,
        } = &twj.relation
            && with_hints.is_empty()
            && partitions.is_empty()
            && index_hints.is_empty()
            && sample
                .as_ref()
                .is_none_or(|k| crate::rewrite::check_sample(d, k).is_ok())
        {
        } else {
            return bad("modifiers on the table");
        }
        let quote = d.quote();
        let expected = mask::projection(d, &rule.view(self.groups)).map_err(|e| e.to_string())?;
        if select.projection != expected {
            return bad("a projection other than the caller's granted columns");
        }
        let Some(tenant_column) = tenant_column else {
            return if select.selection.is_none() {
                Ok(Some(rule))
            } else {
                bad("a predicate")
            };
        };
        // The tenant predicate, then exactly the row filters the table declares for this
        // caller, then (PostgreSQL only) the leakproof conjuncts the rewriter copied in, each
        // `"<unmasked column>" <comparison> <constant>` (or a correlated or closed-IN copy).
        // (Parentheses the printer put around operands are stripped: they change nothing.)
        let mut conjuncts = Vec::new();
        let mut rest = select.selection.as_ref().map(strip);
        while let Some(Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        }) = rest
        {
            conjuncts.push(strip(right));
            rest = Some(strip(left));
        }
        conjuncts.extend(rest);
        conjuncts.reverse();
        let Some((tenant_pred, rest)) = conjuncts.split_first() else {
            return bad("no tenant predicate");
        };
        let filters = self.expected_filters(rule)?;
        if rest.len() < filters.len() || rest.iter().zip(&filters).any(|(a, b)| *a != b) {
            return bad("other row filters than the table declares for the caller");
        }
        for copied in &rest[filters.len()..] {
            if fence(self.catalog, rule, self.groups).is_none()
                || !(crate::pushdown::is_copied(
                    rule,
                    self.groups,
                    quote,
                    &self.binding.caller(),
                    &self.param_occurrences,
                    copied,
                ) || self.is_correlated_copy(rule, copied)
                    || self.is_copied_in(rule, copied))
            {
                return bad("a predicate beside the tenant's");
            }
        }
        let Expr::BinaryOp {
            left,
            op: BinaryOperator::Eq,
            right,
        } = tenant_pred
        else {
            return bad("no tenant predicate");
        };
        match left.as_ref() {
            Expr::Identifier(i) if i.quote_style == Some(quote) && &i.value == tenant_column => {}
            _ => return bad("a predicate on the wrong column"),
        }
        let tenant_ok = match (right.as_ref(), self.binding) {
            (Expr::Identifier(i), TenantBinding::Placeholder { text, .. }) => {
                i.quote_style.is_none() && &i.value == text && text.starts_with('@')
            }
            (Expr::Value(v), TenantBinding::Placeholder { text, .. }) => {
                matches!(&v.value, Value::Placeholder(p) if p == text)
            }
            (Expr::Value(v), TenantBinding::Literal(tenant)) => {
                matches!(&v.value, Value::SingleQuotedString(s) if s == tenant)
            }
            _ => false,
        };
        if !tenant_ok {
            return bad("a predicate that is not the caller's tenant");
        }
        Ok(Some(rule))
    }
}

/// `e` without the parentheses around it.
fn strip(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

pub(crate) fn select_is_plain(s: &Select) -> bool {
    let Select {
        select_token: _,
        optimizer_hints,
        distinct,
        select_modifiers,
        top,
        top_before_distinct: _,
        projection: _,
        exclude,
        into,
        from: _,
        lateral_views,
        prewhere,
        selection: _,
        connect_by,
        group_by,
        cluster_by,
        distribute_by,
        sort_by,
        having,
        named_window,
        qualify,
        window_before_qualify: _,
        value_table_mode,
        flavor,
    } = s;
    optimizer_hints.is_empty()
        && distinct.is_none()
        && select_modifiers.is_none()
        && top.is_none()
        && exclude.is_none()
        && into.is_none()
        && lateral_views.is_empty()
        && prewhere.is_none()
        && connect_by.is_empty()
        && matches!(group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty())
        && cluster_by.is_empty()
        && distribute_by.is_empty()
        && sort_by.is_empty()
        && having.is_none()
        && named_window.is_empty()
        && qualify.is_none()
        && value_table_mode.is_none()
        && matches!(flavor, SelectFlavor::Standard)
}

fn body_is_read_only(s: &SetExpr) -> bool {
    match s {
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => true,
        SetExpr::SetOperation { left, right, .. } => {
            body_is_read_only(left) && body_is_read_only(right)
        }
        SetExpr::Insert(_)
        | SetExpr::Update(_)
        | SetExpr::Delete(_)
        | SetExpr::Merge(_)
        | SetExpr::Table(_) => false,
    }
}

impl Visitor for Verifier<'_> {
    type Break = String;

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<String> {
        match s {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break("not a query".into()),
        }
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<String> {
        if !q.locks.is_empty()
            || q.for_clause.is_some()
            || q.settings.is_some()
            || q.format_clause.is_some()
            || !q.pipe_operators.is_empty()
        {
            return ControlFlow::Break("a query clause outside the allow-list".into());
        }
        if !body_is_read_only(&q.body) {
            return ControlFlow::Break("a data-modifying statement".into());
        }
        let outer = match self.cte_bodies.remove(&addr(q)) {
            Some(visible) => visible,
            None => self.scopes.last().cloned().unwrap_or_default(),
        };
        let mut inner = outer.clone();
        if let Some(with) = &q.with {
            let d = self.catalog.dialect();
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| d.normalize(&c.alias.name))
                .collect();
            for (i, cte) in with.cte_tables.iter().enumerate() {
                let mut visible = outer.clone();
                visible.extend_from_slice(if with.recursive { &names } else { &names[..i] });
                self.cte_bodies.insert(addr(cte.query.as_ref()), visible);
            }
            inner.extend(names);
        }
        self.scopes.push(inner);
        let mut items = Vec::new();
        self.body_items(&q.body, &mut items);
        self.items.push(items);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &Query) -> ControlFlow<String> {
        self.scopes.pop();
        self.items.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<String> {
        if s.into.is_some() || !s.lateral_views.is_empty() || s.top.is_some() {
            return ControlFlow::Break("a SELECT clause outside the allow-list".into());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<String> {
        match tf {
            TableFactor::Table {
                name,
                args: Some(_),
                version: None,
                partitions,
                json_path: None,
                sample: None,
                with_hints,
                index_hints,
                ..
            } if partitions.is_empty() && with_hints.is_empty() && index_hints.is_empty() => {
                if !self.table_function(name) {
                    return ControlFlow::Break(format!("the table function {name}"));
                }
                // Its name is a function's, not a relation's (`pre_visit_relation`).
                self.function_names.push(addr(name));
            }
            TableFactor::Table {
                args,
                version,
                partitions,
                with_ordinality,
                sample,
                ..
            } => {
                if args.is_some() || version.is_some() || !partitions.is_empty() || *with_ordinality
                {
                    return ControlFlow::Break("a table function or time travel".into());
                }
                // A sampling clause only on the table inside a wrapper (`wrapper_rule` checks
                // its form).
                if sample.is_some() && self.wrappers.is_empty() {
                    return ControlFlow::Break("a sampling clause outside a wrapper".into());
                }
            }
            TableFactor::Function { name, .. } => {
                if !self.table_function(name) {
                    return ControlFlow::Break(format!("the table function {name}"));
                }
            }
            TableFactor::UNNEST {
                with_offset: false,
                with_offset_alias: None,
                ..
            } if self.catalog.dialect() == Dialect::Postgres => {}
            TableFactor::Derived { subquery, .. } => match self.wrapper_rule(subquery) {
                Err(reason) => return ControlFlow::Break(reason),
                Ok(Some(rule)) => {
                    if !self.wrappers.is_empty() && !self.nested.borrow().contains(&addr(tf)) {
                        return ControlFlow::Break("nested tenant wrappers".into());
                    }
                    self.wrappers.push((addr(tf), rule));
                }
                Ok(None) => {}
            },
            TableFactor::NestedJoin { .. } => {}
            _ => return ControlFlow::Break("a table expression outside the allow-list".into()),
        }
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<String> {
        if matches!(self.wrappers.last(), Some((a, _)) if *a == addr(tf)) {
            self.wrappers.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, name: &ObjectName) -> ControlFlow<String> {
        if self.function_names.contains(&addr(name)) {
            return ControlFlow::Continue(());
        }
        if let Some((_, rule)) = self.wrappers.last() {
            let rule = *rule;
            // Inside a wrapper the only relation is the wrapped table (checked by shape).
            return match self.emitted_rule(name) {
                Some(r) if std::ptr::eq(r, rule) => ControlFlow::Continue(()),
                _ => ControlFlow::Break(format!("unexpected relation {name} in a wrapper")),
            };
        }
        if let Some([ident]) = plain_parts(name).as_deref() {
            let n = self.catalog.dialect().normalize(ident);
            if self.scopes.last().is_some_and(|s| s.contains(&n)) {
                return ControlFlow::Continue(());
            }
        }
        match self.emitted_rule(name) {
            Some(rule) => {
                ControlFlow::Break(format!("table {} read without its wrapper", rule.name))
            }
            None => ControlFlow::Break(format!("undeclared relation {name}")),
        }
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<String> {
        match e {
            // Outside the tenant wrappers, only the caller's own parameters (never the tenant's).
            Expr::Value(v)
                if matches!(&v.value, Value::Placeholder(p)
                    if self.binding.caller().index(p).is_none())
                    && self.wrappers.is_empty() =>
            {
                ControlFlow::Break("a bind parameter outside a tenant wrapper".into())
            }
            Expr::Identifier(i)
                if i.quote_style.is_none()
                    && i.value.starts_with('@')
                    && self.wrappers.is_empty()
                    && !(self.catalog.dialect() == Dialect::BigQuery
                        && self.binding.caller().index(&i.value).is_some()) =>
            {
                ControlFlow::Break("a query parameter or system variable".into())
            }
            Expr::BinaryOp { op, .. }
            | Expr::AnyOp { compare_op: op, .. }
            | Expr::AllOp { compare_op: op, .. } => {
                match crate::rewrite::check_binary_operator(op) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(format!("the operator {op} is not allowed")),
                }
            }
            Expr::UnaryOp { op, .. } => match op {
                UnaryOperator::Plus | UnaryOperator::Minus | UnaryOperator::Not => {
                    ControlFlow::Continue(())
                }
                other => ControlFlow::Break(format!("the operator {other} is not allowed")),
            },
            Expr::Identifier(i) if self.system_column(i) => {
                ControlFlow::Break("a system column".into())
            }
            Expr::CompoundIdentifier(parts)
                if parts.last().is_some_and(|i| self.system_column(i)) =>
            {
                ControlFlow::Break("a system column".into())
            }
            Expr::Function(f) => {
                let allowed = match f.name.0.as_slice() {
                    [ObjectNamePart::Identifier(i)] => {
                        functions::resolve(self.catalog.dialect(), i).is_some()
                    }
                    _ => false,
                };
                if allowed {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(format!("function {} is not allowed", f.name))
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::Caller;

    /// The verifiers on their own (not behind the rewriter): a table function or a sampling
    /// clause is accepted only in the forms the rewriter emits.
    #[test]
    fn table_functions_and_samples_only_in_the_emitted_forms() {
        let (catalog, binding) = crate::pushdown::tests::orders_world();
        let caller = Caller {
            tenant: "A",
            groups: &[],
            row_limit: None,
            attributes: &crate::NO_ATTRIBUTES,
        };
        let check = |sql: &str| super::verify(sql, &catalog, &binding, &caller);
        let wrapper = |sample: &str| {
            format!(
                r#"(SELECT "id", "tenant_id", "amount" FROM "public"."orders"{sample} WHERE "tenant_id" = $1 OFFSET 0) AS "o""#
            )
        };
        assert_eq!(
            check(&format!(
                r#"SELECT "g" FROM {} CROSS JOIN generate_series(1, "o"."id") AS "g""#,
                wrapper("")
            )),
            Ok(())
        );
        assert_eq!(
            check(&format!(
                r#"SELECT count(*) FROM {}"#,
                wrapper(" TABLESAMPLE BERNOULLI (10)")
            )),
            Ok(())
        );
        for bad in [
            r#"SELECT * FROM pg_ls_dir('.')"#.to_string(),
            r#"SELECT * FROM "pg_catalog"."generate_series"(1, 2)"#.to_string(),
            format!(
                r#"SELECT count(*) FROM {}"#,
                wrapper(" TABLESAMPLE SYSTEM (10)")
            ),
            format!(
                r#"SELECT count(*) FROM {}"#,
                wrapper(" TABLESAMPLE BERNOULLI (10) REPEATABLE (1)")
            ),
            r#"SELECT count(*) FROM "public"."orders" TABLESAMPLE BERNOULLI (10)"#.to_string(),
        ] {
            assert!(check(&bad).is_err(), "{bad} passed");
        }
    }

    /// `orders (id int, tenant_id, amount numeric, status text)` and `customers (id int,
    /// tenant_id, name text, secret text masked to NULL for everyone)`, types declared.
    fn typed_world() -> crate::catalog::Catalog {
        use crate::catalog::{Catalog, MaskKind, MaskRule, TableName, TableRule};
        use crate::leakproof::ColumnType as T;
        let name = |t: &str| TableName {
            catalog: None,
            schema: "public".into(),
            table: t.into(),
        };
        let mut orders = TableRule::protected(
            name("orders"),
            "tenant_id",
            vec![
                "id".into(),
                "tenant_id".into(),
                "amount".into(),
                "status".into(),
            ],
        );
        for (c, t) in [
            ("id", T::Integer),
            ("amount", T::Other),
            ("status", T::Text),
        ] {
            orders.types.insert(c.into(), t);
        }
        let mut customers = TableRule::protected(
            name("customers"),
            "tenant_id",
            vec![
                "id".into(),
                "tenant_id".into(),
                "name".into(),
                "secret".into(),
            ],
        );
        for (c, t) in [("id", T::Integer), ("name", T::Text), ("secret", T::Text)] {
            customers.types.insert(c.into(), t);
        }
        customers.masks.insert(
            "secret".into(),
            MaskRule {
                kind: MaskKind::Null,
                except: vec![],
            },
        );
        Catalog::new(
            crate::Dialect::Postgres,
            crate::ParamStyle::DollarNumbered,
            None,
            "public".into(),
            vec![orders, customers],
        )
        .unwrap()
    }

    /// A correlated copy is accepted only as the rewriter emits it, by each verifier alone.
    #[test]
    fn correlated_copies_only_between_typed_unmasked_columns_of_outer_wrappers() {
        let catalog = typed_world();
        let (_, binding) = crate::pushdown::tests::orders_world();
        let caller = Caller {
            tenant: "A",
            groups: &[],
            row_limit: None,
            attributes: &crate::NO_ATTRIBUTES,
        };
        let customers = |alias: &str| {
            format!(
                r#"(SELECT "id", "tenant_id", "name", NULL AS "secret" FROM "public"."customers" WHERE "tenant_id" = $1 OFFSET 0) AS "{alias}""#
            )
        };
        let query = |outer: &str, copied: &str| {
            format!(
                r#"SELECT 1 FROM {outer} WHERE EXISTS (SELECT 1 FROM (SELECT "id", "tenant_id", "amount", "status" FROM "public"."orders" WHERE ("tenant_id" = $1) AND ({copied}) OFFSET 0) AS "o")"#
            )
        };
        let tree = |sql: &str| super::verify_tree(sql, &catalog, &binding, &caller);
        let pg = |sql: &str| crate::pgverify::verify(sql, &catalog, &binding, &caller);
        let good = query(&customers("c"), r#""id" = "c"."id""#);
        assert_eq!(tree(&good), Ok(()), "{good}");
        assert_eq!(pg(&good), Ok(()), "{good}");
        let text = query(&customers("c"), r#""status" <> "c"."name""#);
        assert_eq!(tree(&text), Ok(()), "{text}");
        assert_eq!(pg(&text), Ok(()), "{text}");
        let derived = r#"(SELECT 1 AS "id") AS "c""#;
        for bad in [
            // numeric's operators are not leakproof.
            query(&customers("c"), r#""amount" = "c"."id""#),
            // int4 against text needs a cast.
            query(&customers("c"), r#""id" = "c"."name""#),
            // The outer column is masked.
            query(&customers("c"), r#""status" = "c"."secret""#),
            // No such item, or an item that is not a wrapper.
            query(&customers("c"), r#""id" = "z"."id""#),
            query(derived, r#""id" = "c"."id""#),
            // A nearer item of that name that is not a wrapper.
            format!(
                r#"SELECT 1 FROM {} WHERE EXISTS (SELECT 1 FROM {derived} WHERE EXISTS (SELECT 1 FROM (SELECT "id", "tenant_id", "amount", "status" FROM "public"."orders" WHERE ("tenant_id" = $1) AND ("id" = "c"."id") OFFSET 0) AS "o"))"#,
                customers("c")
            ),
            // The name of the table inside the wrapper: the raw table's own column.
            query(&customers("orders"), r#""id" = "orders"."id""#),
            // Another operator, or the sides swapped.
            query(&customers("c"), r#""status" LIKE "c"."name""#),
            query(&customers("c"), r#""c"."id" = "id""#),
            // An expression of the outer column.
            query(&customers("c"), r#""id" = ("c"."id" + 1)"#),
        ] {
            assert!(tree(&bad).is_err(), "sqlparser's verifier passed {bad}");
            assert!(pg(&bad).is_err(), "PostgreSQL's verifier passed {bad}");
        }
    }

    /// A copied `IN` is accepted only closed, as the rewriter emits it, by each verifier alone.
    #[test]
    fn copied_in_sub_queries_only_closed_over_their_own_wrapper() {
        let catalog = typed_world();
        let (_, binding) = crate::pushdown::tests::orders_world();
        let caller = Caller {
            tenant: "A",
            groups: &[],
            row_limit: None,
            attributes: &crate::NO_ATTRIBUTES,
        };
        let orders = r#"(SELECT "id", "tenant_id", "amount", "status" FROM "public"."orders" WHERE "tenant_id" = $1 OFFSET 0) AS "o""#;
        let query = |copied: &str| {
            format!(
                r#"SELECT 1 FROM (SELECT "id", "tenant_id", "name", NULL AS "secret" FROM "public"."customers" WHERE ("tenant_id" = $1) AND ({copied}) OFFSET 0) AS "c""#
            )
        };
        let tree = |sql: &str| super::verify_tree(sql, &catalog, &binding, &caller);
        let pg = |sql: &str| crate::pgverify::verify(sql, &catalog, &binding, &caller);
        let good = query(&format!(
            r#""id" IN (SELECT "o"."id" FROM {orders} WHERE ("o"."status" = 'x') AND (upper("o"."status") <> 'Y'))"#
        ));
        assert_eq!(tree(&good), Ok(()), "{good}");
        assert_eq!(pg(&good), Ok(()), "{good}");
        for bad in [
            // An unqualified reference: inside the customers wrapper it may read the raw row.
            format!(r#""id" IN (SELECT "o"."id" FROM {orders} WHERE "name" = 'x')"#),
            format!(r#""id" IN (SELECT "id" FROM {orders})"#),
            // A reference to the raw table inside the outer wrapper.
            format!(r#""id" IN (SELECT "o"."id" FROM {orders} WHERE "customers"."name" = 'x')"#),
            // The tenant's parameter, or a sub-query, in it.
            format!(r#""id" IN (SELECT "o"."id" FROM {orders} WHERE "o"."status" = $1)"#),
            format!(
                r#""id" IN (SELECT "o"."id" FROM {orders} WHERE EXISTS (SELECT 1 FROM "public"."customers"))"#
            ),
            // Types: numeric selected, text against int.
            format!(r#""id" IN (SELECT "o"."amount" FROM {orders})"#),
            format!(r#""id" IN (SELECT "o"."status" FROM {orders})"#),
            // More than the one wrapper, or a raw table.
            format!(r#""id" IN (SELECT "o"."id" FROM {orders}, {orders})"#),
            r#""id" IN (SELECT "id" FROM "public"."orders")"#.to_string(),
            // A clause beyond WHERE.
            format!(r#""id" IN (SELECT "o"."id" FROM {orders} GROUP BY "o"."id")"#),
            format!(r#""id" IN (SELECT "o"."id" FROM {orders} LIMIT 1)"#),
            // NOT IN is not copied.
            format!(r#""id" NOT IN (SELECT "o"."id" FROM {orders})"#),
            // A wrapper nested anywhere else in a wrapper.
            format!(r#"EXISTS (SELECT 1 FROM {orders})"#),
        ] {
            let sql = query(&bad);
            assert!(tree(&sql).is_err(), "sqlparser's verifier passed {sql}");
            assert!(pg(&sql).is_err(), "PostgreSQL's verifier passed {sql}");
        }
    }

    /// Relying on the warehouse's row security: a wrapper without the fence and without
    /// copies, and nothing else, by each verifier alone.
    #[test]
    fn without_the_fence_wrappers_have_no_offset_and_no_copies() {
        let (catalog, binding) = crate::pushdown::tests::orders_world();
        let catalog = catalog.relying_on_row_security();
        let caller = Caller {
            tenant: "A",
            groups: &[],
            row_limit: None,
            attributes: &crate::NO_ATTRIBUTES,
        };
        let tree = |sql: &str| super::verify_tree(sql, &catalog, &binding, &caller);
        let pg = |sql: &str| crate::pgverify::verify(sql, &catalog, &binding, &caller);
        let wrapped = |inside: &str| {
            format!(
                r#"SELECT "id" FROM (SELECT "id", "tenant_id", "amount" FROM "public"."orders" WHERE {inside}) AS "orders" WHERE "id" = 5"#
            )
        };
        let good = wrapped(r#""tenant_id" = $1"#);
        assert_eq!(tree(&good), Ok(()), "{good}");
        assert_eq!(pg(&good), Ok(()), "{good}");
        for bad in [
            wrapped(r#""tenant_id" = $1 OFFSET 0"#),
            wrapped(r#"("tenant_id" = $1) AND ("id" = 5)"#),
            r#"SELECT "id" FROM "public"."orders""#.to_string(),
        ] {
            assert!(tree(&bad).is_err(), "sqlparser's verifier passed {bad}");
            assert!(pg(&bad).is_err(), "PostgreSQL's verifier passed {bad}");
        }
    }
}
