"""Daily conversation metrics as a materialized view, in every organization's schema (see tenants/rls/matviews.py
for how it keeps the second wall), and the index the dashboard's "waiting for a reply" list walks.

``mv_conversation_metrics_daily`` / ``conversation_metrics_daily``: one row per day of the last 90 in the
organization's time zone (days without a message too), over messages that are not private notes:

* ``conversations``: conversations with a message that day; ``unique_contacts``: their distinct contacts;
* ``messages_in`` / ``messages_out``: by direction;
* the first response: every inbound message that starts a wait (the conversation's previous message is not
  inbound, or there is none) waits until the conversation's next outbound message. ``waits`` counts them by
  the day the wait started; ``median_first_response_seconds`` and ``p90_first_response_seconds`` are over the
  answered ones; ``unanswered`` counts those with no outbound message after them yet.

Window aggregates only ever grow their frame (ordered newest first, "the earliest outbound after this one"),
so a 10,000-message thread costs one pass, not a pass per message.
"""

from django.db import migrations

from tenants.rls.matviews import (
    drop_materialized_view_sql,
    drop_refresh_function_sql,
    materialized_view_sql,
    own_organization_sql,
    quote_ident,
    refresh_function_sql,
    run_in_schema,
)

REFRESH_FUNCTION = "refresh_conversation_metrics"
VIEW = "conversation_metrics_daily"
DAYS = 90


def daily_sql(schema: str) -> str:
    s = quote_ident(schema)
    return f"""
WITH org AS ({own_organization_sql(schema)}),
days AS (
    SELECT d::date AS day
    FROM org, generate_series(date_trunc('day', now() AT TIME ZONE org.time_zone) - interval '{DAYS - 1} days',
                              date_trunc('day', now() AT TIME ZONE org.time_zone), interval '1 day') AS d
),
since AS (SELECT (min(day)::timestamp AT TIME ZONE org.time_zone) AS at FROM days, org GROUP BY org.time_zone),
recent AS MATERIALIZED (
    SELECT m.id, m.conversation_id, m.direction, m.sent_at, (m.sent_at AT TIME ZONE org.time_zone)::date AS day
    FROM org JOIN {s}.messages m ON m.organization_id = org.id
    WHERE m.sent_at >= now() - interval '{DAYS + 1} days'  -- a bound known at start-up prunes old partitions
      AND m.sent_at >= (SELECT at FROM since) AND NOT m.private
),
ordered AS (
    SELECT r.*,
           lag(r.direction) OVER (PARTITION BY r.conversation_id ORDER BY r.sent_at, r.id) AS previous_direction,
           min(r.sent_at) FILTER (WHERE r.direction = 'outbound') OVER (
               PARTITION BY r.conversation_id ORDER BY r.sent_at DESC, r.id DESC
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS answered_at
    FROM recent r
),
waits AS (
    SELECT day, count(*) AS waits,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM answered_at - sent_at))
               FILTER (WHERE answered_at IS NOT NULL) AS median_seconds,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM answered_at - sent_at))
               FILTER (WHERE answered_at IS NOT NULL) AS p90_seconds,
           count(*) FILTER (WHERE answered_at IS NULL) AS unanswered
    FROM ordered
    WHERE direction = 'inbound' AND previous_direction IS DISTINCT FROM 'inbound'
    GROUP BY day
),
traffic AS (
    SELECT r.day, count(DISTINCT r.conversation_id) AS conversations, count(DISTINCT c.contact_id) AS unique_contacts,
           count(*) FILTER (WHERE r.direction = 'inbound') AS messages_in,
           count(*) FILTER (WHERE r.direction = 'outbound') AS messages_out
    FROM recent r JOIN {s}.conversations c ON c.id = r.conversation_id
    GROUP BY r.day
)
SELECT org.id AS organization_id, days.day,
       coalesce(traffic.conversations, 0) AS conversations, coalesce(traffic.unique_contacts, 0) AS unique_contacts,
       coalesce(traffic.messages_in, 0) AS messages_in, coalesce(traffic.messages_out, 0) AS messages_out,
       coalesce(waits.waits, 0) AS waits,
       round(waits.median_seconds::numeric, 1) AS median_first_response_seconds,
       round(waits.p90_seconds::numeric, 1) AS p90_first_response_seconds,
       coalesce(waits.unanswered, 0) AS unanswered,
       now() AS computed_at
FROM org CROSS JOIN days
LEFT JOIN traffic ON traffic.day = days.day
LEFT JOIN waits ON waits.day = days.day
"""


def forward_sql(schema: str) -> list[str]:
    return [
        "CREATE INDEX conversations_unanswered_idx ON conversations (organization_id, unanswered_since) "
        "WHERE unanswered_since IS NOT NULL AND deleted_at IS NULL",
        *materialized_view_sql(schema, VIEW, daily_sql(schema), ["organization_id", "day"]),
        *refresh_function_sql(schema, REFRESH_FUNCTION, [VIEW]),
    ]


def reverse_sql(schema: str) -> list[str]:
    return [*drop_refresh_function_sql(schema, REFRESH_FUNCTION), *drop_materialized_view_sql(schema, VIEW),
            "DROP INDEX IF EXISTS conversations_unanswered_idx"]


class Migration(migrations.Migration):
    dependencies = [("messaging", "0008_message_search"), ("patients", "0009_dashboard_views")]

    operations = [migrations.RunPython(run_in_schema(forward_sql), run_in_schema(reverse_sql))]
