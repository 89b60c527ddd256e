"""``public.drop_archived_audit_log_partition(month, expected_rows)``: the last step of archiving a month of audit
logs (tenants/audit_archive.py), after the month's rows are safely in a file.

Audit logs are the compliance record: the legal minimum is the floor here, in the database, not only in a
setting. The function refuses any month that is not wholly older than ``LEGAL_MINIMUM_YEARS`` (7: the
Australian minimum for health records; HIPAA asks 6 for documentation), so no role that can call it — not even
an app compromised into calling it with any argument — removes a younger row. Keeping rows longer is a setting
(``AUDIT_LOG_RETENTION_YEARS``); going below 7 would take a new migration, an owner's decision.

Dropping a partition needs ownership of ``audit_logs``, and counting every organization's rows needs RLS lifted
from the owner (FORCE RLS hides them), so the function is SECURITY DEFINER, does one thing only, and is
executable by the platform role alone (the archival job runs inside ``platform_access``, whose role reads
every organization's audit rows): the month is detached first (no row can reach it afterwards), its rows
counted with RLS no longer forced on that detached table, and only if the count equals ``expected_rows`` — the
rows the caller wrote to its file — is it dropped. Any other outcome raises, and the transaction puts the
partition back as it was.

The platform role may also call ``create_audit_log_partition``: a restore re-creates its month with it, and the
archival job uses it to move old rows out of the default partition before archiving their month.
"""

from django.conf import settings
from django.db import migrations

from tenants.rls.policies import for_role_sql, platform_role

LEGAL_MINIMUM_YEARS = 7

FUNCTION_SQL = f"""
CREATE FUNCTION public.drop_archived_audit_log_partition(month date, expected_rows bigint) RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $function$
DECLARE
    partition_name text;
    partition_oid oid;
    found_rows bigint;
BEGIN
    IF month IS NULL OR month <> date_trunc('month', month)::date THEN
        RAISE EXCEPTION 'drop_archived_audit_log_partition: % is not the first day of a month', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (month + interval '1 month') > (now() AT TIME ZONE 'UTC') - interval '{LEGAL_MINIMUM_YEARS} years' THEN
        RAISE EXCEPTION 'drop_archived_audit_log_partition: % is younger than the legal minimum of {LEGAL_MINIMUM_YEARS} years',
            month USING ERRCODE = 'insufficient_privilege';
    END IF;
    partition_name := 'audit_logs_' || to_char(month, '"y"YYYY"m"MM');
    SELECT c.oid INTO partition_oid FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname = partition_name
      AND i.inhparent = 'public.audit_logs'::regclass;
    IF partition_oid IS NULL THEN
        RAISE EXCEPTION 'drop_archived_audit_log_partition: % is not a partition of audit_logs', partition_name
            USING ERRCODE = 'undefined_table';
    END IF;
    EXECUTE format('ALTER TABLE public.audit_logs DETACH PARTITION public.%I', partition_name);
    EXECUTE format('ALTER TABLE public.%I NO FORCE ROW LEVEL SECURITY', partition_name);
    EXECUTE format('SELECT count(*) FROM public.%I', partition_name) INTO found_rows;
    IF found_rows IS DISTINCT FROM expected_rows THEN
        RAISE EXCEPTION 'drop_archived_audit_log_partition: % holds % rows, the archive %', partition_name,
            found_rows, expected_rows USING ERRCODE = 'data_exception';
    END IF;
    EXECUTE format('DROP TABLE public.%I', partition_name);
    RETURN found_rows;
END
$function$
"""


def grants_sql() -> list[str]:
    drop = "public.drop_archived_audit_log_partition(date, bigint)"
    return [
        f"REVOKE ALL ON FUNCTION {drop} FROM PUBLIC",
        # Default privileges grant every new function to the app role: take this one back.
        for_role_sql(settings.DATABASE_APP_ROLE, f"REVOKE ALL ON FUNCTION {drop} FROM %I"),
        for_role_sql(platform_role(), f"GRANT EXECUTE ON FUNCTION {drop} TO %I"),
        for_role_sql(platform_role(), "GRANT EXECUTE ON FUNCTION public.create_audit_log_partition(date) TO %I"),
    ]


class Migration(migrations.Migration):
    dependencies = [("tenants", "0013_audit_partition_moves_default_rows")]

    operations = [
        migrations.RunSQL(
            sql=[FUNCTION_SQL, *grants_sql()],
            reverse_sql=["DROP FUNCTION IF EXISTS public.drop_archived_audit_log_partition(date, bigint)"],
        )
    ]
