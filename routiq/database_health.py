"""The numbers an on-call engineer looks at first: table sizes, index use, connections, queues.

Built from the seed's monitoring queries, extended to every schema (one per organization)."""

from __future__ import annotations

import django_rq
from django.conf import settings
from django.db import connection
from redis.exceptions import RedisError

TABLE_SIZES = """
SELECT n.nspname AS schema, c.relname AS table, pg_total_relation_size(c.oid) AS bytes,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS size, c.reltuples::bigint AS estimated_rows
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
ORDER BY pg_total_relation_size(c.oid) DESC
LIMIT 40
"""
INDEX_USAGE = """
SELECT schemaname AS schema, relname AS table, indexrelname AS index, idx_scan, idx_tup_read, idx_tup_fetch,
       pg_size_pretty(pg_relation_size(indexrelid)) AS size
FROM pg_stat_user_indexes
ORDER BY idx_scan DESC, pg_relation_size(indexrelid) DESC
LIMIT 40
"""
UNUSED_INDEXES = """
SELECT schemaname AS schema, relname AS table, indexrelname AS index,
       pg_size_pretty(pg_relation_size(indexrelid)) AS size
FROM pg_stat_user_indexes
WHERE idx_scan = 0 AND pg_relation_size(indexrelid) > 1024 * 1024
ORDER BY pg_relation_size(indexrelid) DESC
LIMIT 20
"""
CONNECTIONS = """
SELECT count(*) AS total,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state = 'idle') AS idle,
       count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting_on_locks,
       current_setting('max_connections')::int AS max_connections
FROM pg_stat_activity WHERE datname = current_database()
"""


def rows(sql: str) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        columns = [column.name for column in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def queue_report() -> list[dict]:
    report = []
    for name in settings.RQ_QUEUES:
        try:
            queue = django_rq.get_queue(name)
            report.append({
                "name": name, "queued": queue.count, "started": queue.started_job_registry.count,
                "failed": queue.failed_job_registry.count, "deferred": queue.deferred_job_registry.count,
                "scheduled": queue.scheduled_job_registry.count, "error": "",
            })
        except (RedisError, OSError) as exc:
            report.append({"name": name, "error": exc.__class__.__name__})
    return report


def report() -> dict:
    return {
        "table_sizes": rows(TABLE_SIZES),
        "index_usage": rows(INDEX_USAGE),
        "unused_indexes": rows(UNUSED_INDEXES),
        "connections": rows(CONNECTIONS)[0],
        "queues": queue_report(),
    }
