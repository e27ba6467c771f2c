"""A whole statement → its semantic SELECTs (each a metric query) and the statement that runs over their answers.

Every innermost SELECT whose FROM is a single semantic table is a semantic SELECT; everything around it
(outer SELECTs, CTEs, joins and unions of semantic subqueries) stays and runs in the outer step.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from semantic.errors import QueryError
from server.sql.select import SelectRewriter, SemanticSelect
from server.sql.tables import Catalog, SemanticTable


@dataclass
class Rewritten:
    statement: exp.Query  # the outer step, over the answers registered under each select's name
    selects: list[SemanticSelect]

    @property
    def direct(self) -> SemanticSelect | None:
        """The one semantic SELECT whose answer, its columns picked and renamed, is the whole result."""
        if len(self.selects) == 1 and self.selects[0].direct is not None and self.statement is self.selects[0].outer:
            return self.selects[0]
        return None


class Rewriter:
    def __init__(self, catalog: Catalog, project):
        self.catalog, self.project = catalog, project
        self.selects: list[SemanticSelect] = []

    def rewrite(self, statement: exp.Query) -> Rewritten:
        return Rewritten(self.query(statement, frozenset()), self.selects)

    def query(self, node: exp.Expression, ctes: frozenset[str]) -> exp.Expression:
        """Rewrite one query node (SELECT, set operation, parenthesized query) with the CTE names it can see."""
        with_ = node.args.get("with_")
        if with_ is not None:
            if with_.args.get("recursive"):
                raise QueryError("WITH RECURSIVE is not supported", "write the CTEs without RECURSIVE")
            for cte in with_.expressions:
                cte.set("this", self.query(cte.this, ctes))
                ctes = ctes | {cte.alias_or_name}
        if isinstance(node, exp.Subquery):
            node.set("this", self.query(node.this, ctes))
            return node
        if isinstance(node, exp.SetOperation):
            node.set("this", self.query(node.this, ctes))
            node.set("expression", self.query(node.expression, ctes))
            return node
        if isinstance(node, exp.Select):
            table = self.semantic_table(node, ctes)
            if table is not None:
                rewritten = SelectRewriter(table, node, f"__q{len(self.selects)}", self.project).rewrite()
                self.selects.append(rewritten)
                return rewritten.outer
            self.inner(node, ctes)
            return node
        return node  # VALUES and the like run as written

    def semantic_table(self, select: exp.Select, ctes: frozenset[str]) -> SemanticTable | None:
        source = select.args.get("from_")
        source = source.this if source is not None else None
        if not self._named(source) or (not source.db and source.name in ctes):
            return None
        table = self.catalog.table(source.name, source.db or None)
        if table is None:
            raise self.catalog.unknown(source.name, source.db or None, ctes)
        if select.args.get("joins"):
            raise QueryError(f"`{table.name}` cannot be joined directly: each semantic SELECT reads one table",
                             "ask `metrics` for metrics of several views by shared dimensions, or join two "
                             "aggregated subqueries: SELECT … FROM (SELECT … GROUP BY …) a JOIN (…) b ON …")
        return table

    def inner(self, select: exp.Select, ctes: frozenset[str]) -> None:
        """A SELECT that is not semantic: rewrite the queries it holds and check the tables it names."""
        stack = [v for k, v in reversed(select.args.items()) if k != "with_"]
        while stack:  # depth first, in source order (answers are numbered as written)
            value = stack.pop()
            if isinstance(value, list):
                stack.extend(reversed(value))
            elif isinstance(value, exp.Query):
                replacement = self.query(value, ctes)
                if replacement is not value:
                    value.replace(replacement)
            elif isinstance(value, exp.Table) and self._named(value):
                if value.db or value.name not in ctes:
                    found = self.catalog.table(value.name, value.db or None)
                    if found is None:
                        raise self.catalog.unknown(value.name, value.db or None, ctes)
                    raise QueryError(f"`{found.name}` cannot be joined directly: each semantic SELECT reads one "
                                     "table", "join two aggregated subqueries instead: SELECT … FROM "
                                     f"(SELECT … FROM {found.name} GROUP BY …) a JOIN (…) b ON …")
            elif isinstance(value, exp.Expression):
                stack.extend(v for v in reversed(value.args.values()) if v is not None)

    @staticmethod
    def _named(source) -> bool:
        return isinstance(source, exp.Table) and isinstance(source.this, exp.Identifier)
