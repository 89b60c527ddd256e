"""``create_audit_log_partition(month)`` moves the month's rows out of ``audit_logs_default`` first.

Before, an audit row written for a month without a partition (the scheduled job had not run for months, or a
row was dated ahead) sat in the default partition, and from then on that month's partition could never be
created: PostgreSQL refuses a new partition whose range the default partition already holds rows of. Now the
function creates the month as a table of its own, moves the default partition's rows of that month into it
and attaches it, all in its one transaction (a failure changes nothing).

Moving is a DELETE from an append-only table, whose trigger refuses it for every role, and the rows are every
organization's, which FORCE RLS hides from the owner. So inside the function only, on the default partition
only, the append-only trigger is disabled and RLS is not forced, and both are restored before it returns
(DDL is transactional: if anything fails they are never seen lifted). Rows are moved, never changed or
dropped: the count before and after is checked. Everything else is 0008's function, unchanged.
"""

import importlib

from django.db import migrations

from tenants.rls.policies import TENANT_CONDITION, wrap

previous = importlib.import_module("tenants.migrations.0008_platform_role_policies")

CREATE_ATTACHED = """
        EXECUTE format(
            'CREATE TABLE public.%I PARTITION OF public.audit_logs FOR VALUES FROM (%L) TO (%L)',
            partition_name,
            to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
        );
"""
CREATE_MOVE_ATTACH = """
        DECLARE
            lower_bound constant text := to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00';
            upper_bound constant text := to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00';
            waiting bigint;
            moved bigint;
        BEGIN
            EXECUTE format('CREATE TABLE public.%I (LIKE public.audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           partition_name);
            ALTER TABLE public.audit_logs_default DISABLE TRIGGER audit_logs_append_only;
            ALTER TABLE public.audit_logs_default NO FORCE ROW LEVEL SECURITY;
            SELECT count(*) INTO waiting FROM public.audit_logs_default
            WHERE created_at >= lower_bound::timestamptz AND created_at < upper_bound::timestamptz;
            EXECUTE format(
                'WITH rows_moved AS (DELETE FROM public.audit_logs_default WHERE created_at >= %L::timestamptz '
                'AND created_at < %L::timestamptz RETURNING *) INSERT INTO public.%I SELECT * FROM rows_moved',
                lower_bound, upper_bound, partition_name);
            GET DIAGNOSTICS moved = ROW_COUNT;
            IF moved <> waiting THEN
                RAISE EXCEPTION 'create_audit_log_partition: % rows waiting, % moved', waiting, moved;
            END IF;
            ALTER TABLE public.audit_logs_default FORCE ROW LEVEL SECURITY;
            ALTER TABLE public.audit_logs_default ENABLE TRIGGER audit_logs_append_only;
            EXECUTE format('ALTER TABLE public.audit_logs ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                           partition_name, lower_bound, upper_bound);
        END;
"""


def function_sql(*, moving: bool) -> str:
    text = previous.partition_function_sql(condition=wrap(TENANT_CONDITION), with_platform_policy=True)
    assert CREATE_ATTACHED in text
    return text.replace(CREATE_ATTACHED, CREATE_MOVE_ATTACH, 1) if moving else text


class Migration(migrations.Migration):
    dependencies = [("tenants", "0012_organization_time_zone_retention")]

    operations = [migrations.RunSQL(sql=[function_sql(moving=True)], reverse_sql=[function_sql(moving=False)])]
