"""The frozen config values and the schema name the same keys.

The schema (agent/config/schema.py) is where a key is defined and
documented; the loader builds each dataclass from a schema table's checked
values (`Type(**values)`). The dataclasses stay written out so that mypy
--strict sees every field's type; this test is what keeps the two in step,
so a key added to one and not the other fails here, not at a user's site.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Set

import pytest

from agent.config.schema import TOP, table_named
from agent.config.types import (
    Config,
    LeaseConfig,
    MetricsConfig,
    RestartConfig,
    TargetConfig,
    Thresholds,
)


def fields(cls: Any) -> Set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def keys(table_name: str) -> Set[str]:
    table = TOP if table_name == "" else table_named(table_name)
    return {option.key for option in table.options}


@pytest.mark.parametrize(
    ("cls", "table", "structural"),
    [
        (Thresholds, "thresholds", set()),
        (MetricsConfig, "metrics", set()),
        (TargetConfig, "targets", set()),
        (LeaseConfig, "restart.lease", set()),
        # Sub-tables are values of their own, built from their own schema tables.
        (RestartConfig, "restart", {"windows", "lease"}),
        (Config, "", {"path", "thresholds", "metrics", "targets", "restart"}),
    ],
)
def test_each_dataclass_has_exactly_its_schema_tables_keys(
    cls: Any, table: str, structural: Set[str]
) -> None:
    assert fields(cls) - structural == keys(table)
