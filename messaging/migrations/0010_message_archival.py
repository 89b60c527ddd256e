"""``drop_archived_messages_partition(month, expected_rows)`` in every organization's schema: the last step of
archiving a month of messages (messaging/retention.py), after the month's rows are safely in a file.

Detaching and dropping a partition needs ownership of ``messages``: the owner's right. The archival job runs as
the app role, so the function is SECURITY DEFINER, fixed to its schema, and does one thing only:

* it refuses unless the bound organization (``app.current_organization``) is this schema's active one, like
  ``message_search`` — no argument names an organization;
* the month must be a whole month that has ended (never the current month or a later one), with a partition
  ``messages_yYYYYmMM`` attached to this schema's ``messages``;
* the partition must hold exactly ``expected_rows`` rows — the rows the caller wrote to its file while holding
  a SHARE lock on the partition (no write can slip in between): anything else and nothing happens;
* then the partition is detached and dropped, with the month's search documents.

EXECUTE is granted to the app role only. A restore (``manage.py restore_archive``) re-creates the month with
``create_messages_partition`` and copies the rows back through ``messages``, whose triggers rebuild the search
documents.
"""

from django.conf import settings
from django.db import migrations

from tenants.rls.matviews import quote_ident, quote_literal, run_in_schema

APP_ROLE = settings.DATABASE_APP_ROLE


def forward_sql(schema: str) -> list[str]:
    s = quote_ident(schema)
    role = APP_ROLE.replace("'", "''")
    function = f"{s}.drop_archived_messages_partition(date, bigint)"
    return [
        f"""
CREATE FUNCTION {s}.drop_archived_messages_partition(month date, expected_rows bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {s}, pg_temp
SET lock_timeout = '5s'
AS $function$
DECLARE
    own_schema constant text := {quote_literal(schema)};
    bound_text text := current_setting('app.current_organization', true);
    own_id uuid;
    partition_name text;
    partition_oid oid;
    found_rows bigint;
BEGIN
    SELECT o.id INTO own_id FROM public.organizations o WHERE o.schema_name = own_schema AND o.is_active;
    IF own_id IS NULL OR coalesce(bound_text, '') = '' OR bound_text <> own_id::text THEN
        RAISE EXCEPTION 'drop_archived_messages_partition: bind this schema''s organization first'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF month IS NULL OR month <> date_trunc('month', month)::date
            OR month >= date_trunc('month', now() AT TIME ZONE 'UTC')::date THEN
        RAISE EXCEPTION 'drop_archived_messages_partition: % is not a month that has ended', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    partition_name := 'messages_' || to_char(month, '"y"YYYY"m"MM');
    SELECT c.oid INTO partition_oid FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
    WHERE c.relnamespace = own_schema::regnamespace AND c.relname = partition_name
      AND i.inhparent = format('%I.messages', own_schema)::regclass;
    IF partition_oid IS NULL THEN
        RAISE EXCEPTION 'drop_archived_messages_partition: % is not a partition of messages', partition_name
            USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('SELECT count(*) FROM %I.%I', own_schema, partition_name) INTO found_rows;  -- under its RLS
    IF found_rows IS DISTINCT FROM expected_rows THEN
        RAISE EXCEPTION 'drop_archived_messages_partition: % holds % rows, the archive %', partition_name,
            found_rows, expected_rows USING ERRCODE = 'data_exception';
    END IF;
    EXECUTE format('ALTER TABLE %I.messages DETACH PARTITION %I.%I', own_schema, own_schema, partition_name);
    EXECUTE format('DROP TABLE %I.%I', own_schema, partition_name);
    DELETE FROM {s}.message_search_documents
    WHERE sent_at >= (to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00')::timestamptz
      AND sent_at < (to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00')::timestamptz;
    RETURN found_rows;
END
$function$
""",
        f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION {function.replace("'", "''")} TO %I', '{role}');
            END IF;
        END
        $$
        """,
    ]


def reverse_sql(schema: str) -> list[str]:
    return [f"DROP FUNCTION IF EXISTS {quote_ident(schema)}.drop_archived_messages_partition(date, bigint)"]


class Migration(migrations.Migration):
    dependencies = [("messaging", "0009_conversation_metrics")]

    operations = [migrations.RunPython(run_in_schema(forward_sql), run_in_schema(reverse_sql))]
