"""Reading query plans: used by the EXPLAIN tests (patients/tests/test_query_plans.py) and by the dashboard
benchmark, which checks the same plans on a million rows."""

from __future__ import annotations

from django.db import connection, transaction

BIG_TABLES = ("contacts", "appointments", "active_patients", "conversations", "messages")


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(sql: str, params) -> list[dict]:
    """The nodes of the plan of ``sql`` (planned, not run)."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        (document,) = cursor.fetchone()
    return list(plan_nodes(document[0]["Plan"]))


def sequential_scans(nodes: list[dict]) -> list[str]:
    """Big tables (and partitions of them) read by a sequential scan."""
    return sorted(node["Relation Name"] for node in nodes
                  if node["Node Type"] == "Seq Scan" and node["Relation Name"].startswith(BIG_TABLES))


def unbounded_index_scans(nodes: list[dict]) -> list[str]:
    """Index scans of a big table with no condition on the index: a walk of the whole index."""
    return sorted(node["Index Name"] for node in nodes if "Index Name" in node and "Index Cond" not in node
                  and node["Relation Name"].startswith(BIG_TABLES))


def indexes_used(nodes: list[dict]) -> set[str]:
    return {node["Index Name"] for node in nodes if "Index Name" in node}


def plan_problems(sql: str, params, index: str | None) -> list[str]:
    """What is wrong with the plan of ``sql`` for a query meant to use ``index`` ([] when nothing): a
    sequential scan or a whole-index walk of a big table, or (unless ``index`` is None) ``index`` unused."""
    nodes = explain(sql, params)
    problems = [f"sequential scan of {name}" for name in sequential_scans(nodes)]
    problems += [f"whole-index walk of {name}" for name in unbounded_index_scans(nodes)]
    if index is not None and index not in indexes_used(nodes):
        problems.append(f"{index} not used (used: {', '.join(sorted(indexes_used(nodes))) or 'none'})")
    return problems
