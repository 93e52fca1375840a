"""The tenant graph, read from the catalog (never hard-coded).

- **Application tables**: ordinary and partitioned tables (not partitions) outside the system
  schemas, the worker's own schema ``ops``, extension-owned tables and migration bookkeeping
  tables (``schema_migrations``, ``_prisma_migrations``, ``alembic_version``, ...).
- **Foreign keys** between application tables, any number of columns (a composite key joins on
  every column pair).
- **Tenant tables**: application tables with a ``tenant_id`` column. **Sources** of a tenant
  table: its foreign keys to a parent that has ``tenant_id`` too (not the one on ``tenant_id``
  itself), where the backfill takes the value from.
- **Roots**: tables that ``tenant_id`` columns reference (``tenants``): their key is the tenant.
- **Tenant scope**: roots, tenant tables and every table that reaches one of them through
  foreign keys (a table without ``tenant_id`` whose parent is a tenant's row belongs to it).

Orders are topological (Kahn), ties broken by name so a plan is stable; a cycle (outside
self-references, which never order anything) raises ``GraphCycle`` naming the tables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from shared import OpsplaneError

TENANT_COLUMN = "tenant_id"
EXCLUDED_SCHEMAS = frozenset({"ops", "pg_catalog", "information_schema"})
# Migration bookkeeping of the usual tools (Rails, Django, Knex, Prisma, Drizzle, goose, Alembic,
# Flyway, Liquibase, ...): never application data, never purged.
_MIGRATION_TABLE = re.compile(
    r"migration|^alembic_version$|^flyway_schema_history$|^schema_version$|"
    r"^goose_db_version$|^databasechangelog(lock)?$|^ar_internal_metadata$",
    re.IGNORECASE,
)


class TenancyError(OpsplaneError):
    """A tenant-data job cannot go on; the job fails with this message."""


class GraphError(TenancyError):
    """The catalog describes something the tenant tools cannot work with."""


class GraphCycle(GraphError):
    def __init__(self, tables: Iterable[str]) -> None:
        self.tables = sorted(tables)
        super().__init__("foreign keys form a cycle between: " + ", ".join(self.tables)
                         + " (break it, e.g. with a deferrable or nullable key, and re-run)")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_migration_table(name: str) -> bool:
    return bool(_MIGRATION_TABLE.search(name))


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    primary_key: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()
    tenant_type: str | None = None  # the type of its tenant_id column, None without one

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def sql(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def has_tenant(self) -> bool:
        return self.tenant_type is not None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    child: str  # qualified table names
    parent: str
    child_columns: tuple[str, ...]
    parent_columns: tuple[str, ...]

    @property
    def self_reference(self) -> bool:
        return self.child == self.parent

    def join(self, child_alias: str, parent_alias: str) -> str:
        """``parent.a = child.x AND ...`` over every column pair."""
        return " AND ".join(
            f"{parent_alias}.{quote_ident(p)} = {child_alias}.{quote_ident(c)}"
            for c, p in zip(self.child_columns, self.parent_columns, strict=True)
        )


@dataclass(frozen=True)
class TenantGraph:
    tables: dict[str, Table]
    foreign_keys: tuple[ForeignKey, ...] = ()
    column: str = TENANT_COLUMN
    _parents: dict[str, list[ForeignKey]] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for fk in self.foreign_keys:
            self._parents.setdefault(fk.child, []).append(fk)

    def table(self, name: str) -> Table:
        return self.tables[name]

    def parents_of(self, name: str) -> list[ForeignKey]:
        return list(self._parents.get(name, ()))

    def children_of(self, name: str) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.parent == name]

    @property
    def application_tables(self) -> list[str]:
        return sorted(self.tables)

    @property
    def tenant_tables(self) -> list[str]:
        return sorted(n for n, t in self.tables.items() if t.has_tenant)

    def is_root_edge(self, fk: ForeignKey) -> bool:
        """A foreign key on ``tenant_id`` alone: it points at the tenant itself."""
        return fk.child_columns == (self.column,) and self.tables[fk.child].has_tenant

    @property
    def roots(self) -> dict[str, str]:
        """``{root table: its key column}`` for every table a ``tenant_id`` references."""
        return {fk.parent: fk.parent_columns[0] for fk in self.foreign_keys
                if self.is_root_edge(fk)}

    def sources(self, name: str) -> list[ForeignKey]:
        """Where ``name``'s tenant_id comes from: its keys to parents that have one."""
        if not self.tables[name].has_tenant:
            return []
        return [fk for fk in self.parents_of(name)
                if self.tables[fk.parent].has_tenant and self.column not in fk.child_columns]

    def backfill_order(self) -> list[str]:
        """Tenant tables, each after every table it takes tenant_id from."""
        tables = self.tenant_tables
        edges = [(fk.parent, fk.child) for t in tables for fk in self.sources(t)]
        return topological(tables, edges)

    def tenant_scope(self) -> list[str]:
        """Roots, tenant tables and everything that reaches them through foreign keys."""
        scope = set(self.roots) | set(self.tenant_tables)
        changed = True
        while changed:
            changed = False
            for fk in self.foreign_keys:
                if fk.parent in scope and fk.child not in scope:
                    scope.add(fk.child)
                    changed = True
        return sorted(scope)

    def purge_order(self) -> list[str]:
        """The tenant scope, children first (every row's children are gone before it)."""
        scope = self.tenant_scope()
        inside = set(scope)
        edges = [(fk.parent, fk.child) for fk in self.foreign_keys
                 if fk.child in inside and fk.parent in inside]
        return list(reversed(topological(scope, edges)))

    def describe(self) -> dict[str, object]:
        """A JSON-able picture of the graph (for results and docs)."""
        return {
            "tenant_tables": self.tenant_tables,
            "roots": self.roots,
            "sources": {t: [f"{fk.name} -> {fk.parent}" for fk in self.sources(t)]
                        for t in self.tenant_tables},
        }


def topological(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm: ``(before, after)`` edges, self-loops ignored, ties by name.
    Raises ``GraphCycle`` with the tables left over when there is a cycle."""
    order_nodes = sorted(set(nodes))
    incoming: dict[str, set[str]] = {n: set() for n in order_nodes}
    outgoing: dict[str, set[str]] = {n: set() for n in order_nodes}
    for before, after in edges:
        if before == after or before not in incoming or after not in incoming:
            continue
        incoming[after].add(before)
        outgoing[before].add(after)
    ready = sorted(n for n in order_nodes if not incoming[n])
    order: list[str] = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for nxt in sorted(outgoing[node]):
            incoming[nxt].discard(node)
            if not incoming[nxt]:
                ready.append(nxt)
        ready.sort()
    if len(order) != len(order_nodes):
        raise GraphCycle(n for n in order_nodes if incoming[n])
    return order


_TABLES = """
SELECT c.oid, n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname <> ALL($1::text[]) AND n.nspname NOT LIKE 'pg\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""

_KEYS = """
SELECT k.conrelid AS oid,
       array_agg(a.attname::text ORDER BY u.ord) AS columns,
       array_agg(format_type(a.atttypid, a.atttypmod) ORDER BY u.ord) AS types
FROM pg_constraint k
CROSS JOIN LATERAL unnest(k.conkey) WITH ORDINALITY AS u (attnum, ord)
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
WHERE k.contype = 'p' AND k.conrelid = ANY($1::oid[])
GROUP BY k.conrelid
"""

_TENANT_COLUMNS = """
SELECT a.attrelid AS oid, format_type(a.atttypid, a.atttypmod) AS type
FROM pg_attribute a
WHERE a.attrelid = ANY($1::oid[]) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped
"""

_FOREIGN_KEYS = """
SELECT k.conname::text AS name, k.conrelid AS child, k.confrelid AS parent,
       ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u (n, o)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.o)
           AS child_columns,
       ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS u (n, o)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.o)
           AS parent_columns
FROM pg_constraint k
WHERE k.contype = 'f' AND k.conrelid = ANY($1::oid[]) AND k.confrelid = ANY($1::oid[])
ORDER BY k.conname
"""


async def read_graph(conn: asyncpg.Connection, column: str = TENANT_COLUMN) -> TenantGraph:
    """The tenant graph of the database ``conn`` is connected to."""
    rows = [r for r in await conn.fetch(_TABLES, sorted(EXCLUDED_SCHEMAS))
            if not is_migration_table(r["name"])]
    oids = [r["oid"] for r in rows]
    keys = {r["oid"]: r for r in await conn.fetch(_KEYS, oids)}
    tenant = {r["oid"]: r["type"] for r in await conn.fetch(_TENANT_COLUMNS, oids, column)}
    names: dict[int, str] = {}
    tables: dict[str, Table] = {}
    for r in rows:
        key = keys.get(r["oid"])
        table = Table(r["schema"], r["name"],
                      tuple(key["columns"]) if key else (), tuple(key["types"]) if key else (),
                      tenant.get(r["oid"]))
        names[r["oid"]] = table.qualified
        tables[table.qualified] = table
    fks = tuple(
        ForeignKey(r["name"], names[r["child"]], names[r["parent"]],
                   tuple(r["child_columns"]), tuple(r["parent_columns"]))
        for r in await conn.fetch(_FOREIGN_KEYS, oids)
    )
    return TenantGraph(tables, fks, column)
