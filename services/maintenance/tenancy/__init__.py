"""Tenant data tools: the tenant graph read from the catalog, the tenant_id backfill and the
purge of application data (docs/backfill-purge.md)."""

from ..locks import DESTRUCTIVE_LOCK_ID
from .batches import BatchConfig
from .graph import (
    TENANT_COLUMN,
    ForeignKey,
    GraphCycle,
    GraphError,
    Table,
    TenantGraph,
    is_migration_table,
    read_graph,
    topological,
)

__all__ = [
    "DESTRUCTIVE_LOCK_ID",
    "TENANT_COLUMN",
    "BatchConfig",
    "ForeignKey",
    "GraphCycle",
    "GraphError",
    "Table",
    "TenantGraph",
    "is_migration_table",
    "read_graph",
    "topological",
]
