"""audit_logs becomes append-only and partitioned by month (RANGE on created_at).

What this migration builds, in the public schema (tenants is a shared app):

* ``audit_logs`` is re-created as a partitioned table with the columns, indexes, foreign keys and sequence
  Django created. Its primary key is (id, created_at) because a partitioned table's key must contain the
  partition key; Django still treats ``id`` as the pk, which stays unique because every id comes from the
  one sequence ``audit_logs_id_seq`` (carried over, so ids keep increasing). Existing rows are copied.
* partitions: ``audit_logs_default`` (an insert never fails for want of a partition) and one per month,
  ``audit_logs_yYYYYmMM``, bounded in UTC: every month that already holds rows, this month and the next 3.
  ``tenants.maintenance_jobs.create_audit_log_partitions`` keeps creating months ahead.
* Row Level Security: ENABLE + FORCE and the platform-readable ``organization_isolation`` policy (the same
  USING / WITH CHECK as tenants.rls.policies.PLATFORM_CONDITION) on the parent *and on every partition*: a query
  that names a partition directly is checked against the partition's own policies, not the parent's.
* append-only: ``audit_logs_refuse_change()`` raises on UPDATE and DELETE (a BEFORE ... FOR EACH ROW trigger
  on the parent, which PostgreSQL clones onto every partition, present and future) and on TRUNCATE (a
  statement trigger on the parent and on each partition, since statement triggers are not cloned). This binds
  the app role and the owner role alike. Break-glass (documented, deliberate, owner only): the owner role can
  ``ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_append_only`` / drop the trigger, or DETACH and DROP a
  whole partition for retention. The app role can do none of that (not an owner), and holds no TRUNCATE.
* ``create_audit_log_partition(month date)``: the one piece of SQL that creates a month's partition, used by
  this migration and by the scheduled job. See the comment above FUNCTION_SQL for why SECURITY DEFINER.

Reverse: rebuilds the plain table Django created (identity id, pk (id)), copies the rows back, and restores
the RLS of 0002, so ``migrate tenants 0005`` works.
"""

from django.conf import settings
from django.db import migrations

from tenants.rls.policies import PLATFORM_CONDITION, continue_sequence_sql, forced_policy_sql, wrap

POLICY_CONDITION = wrap(PLATFORM_CONDITION)
APP_ROLE = settings.DATABASE_APP_ROLE

COLUMNS = (
    "id, actor_label, action, object_type, object_id, ip_address, user_agent, changes, created_at, "
    "actor_id, organization_id"
)
# As Django created them (0001): same order, types and nullability.
COLUMN_DEFINITIONS = """
    actor_label varchar(100) NOT NULL,
    action varchar(100) NOT NULL,
    object_type varchar(100) NOT NULL,
    object_id varchar(100) NOT NULL,
    ip_address inet NULL,
    user_agent varchar(500) NOT NULL,
    changes jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    actor_id uuid NULL,
    organization_id uuid NULL
"""
# The names Django gave the indexes and foreign keys in 0001 (deterministic), so they read the same after.
INDEXES_AND_FOREIGN_KEYS = [
    "CREATE INDEX audit_logs_actor_id_303d1495 ON audit_logs (actor_id)",
    "CREATE INDEX audit_logs_created_idx ON audit_logs (organization_id, created_at DESC)",
    "CREATE INDEX audit_logs_organization_id_5333c1ef ON audit_logs (organization_id)",
    "ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_actor_id_303d1495_fk_users_id "
    "FOREIGN KEY (actor_id) REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED",
    "ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_organization_id_5333c1ef_fk_organizations_id "
    "FOREIGN KEY (organization_id) REFERENCES organizations (id) DEFERRABLE INITIALLY DEFERRED",
]


def rls_sql(table: str) -> list[str]:
    return forced_policy_sql(table, PLATFORM_CONDITION)


TRIGGER_FUNCTION_SQL = """
CREATE FUNCTION public.audit_logs_refuse_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $function$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit rows are never changed or removed. Break-glass is an owner-role decision: '
                     'see tenants/migrations/0006_audit_logs_append_only_partitioned.py.';
END
$function$
"""

# Creating a partition needs CREATE on the public schema and ownership of audit_logs: the owner role's
# rights. The scheduled job runs as the app role, which has neither, so the function is SECURITY DEFINER
# (it runs as the role that ran this migration, the owner). That is safe because the function can do one
# thing only: given a validated month (first day of a month, 2000-01 .. 120 months ahead), create that
# month's partition of audit_logs with the fixed name, bounds, RLS (ENABLE + FORCE), the fixed policy and the
# TRUNCATE guard, or do nothing if it is already there. No caller-supplied text reaches the SQL (the name
# and bounds are derived from a date), search_path is pinned to public, pg_temp so no object can be shadowed,
# and EXECUTE is revoked from PUBLIC and granted to the app role only. lock_timeout keeps a blocked CREATE
# (it takes ACCESS EXCLUSIVE on audit_logs and its default partition) from stalling audit inserts: the job
# simply fails and retries on its next run, months before the partition is needed.
FUNCTION_SQL = f"""
CREATE FUNCTION public.create_audit_log_partition(month date) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
SET lock_timeout = '5s'
AS $function$
DECLARE
    policy_condition constant text := $policy${POLICY_CONDITION}$policy$;
    partition_name text;
    partition_oid oid;
BEGIN
    IF month IS NULL THEN
        RAISE EXCEPTION 'create_audit_log_partition: month is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF month <> date_trunc('month', month)::date THEN
        RAISE EXCEPTION 'create_audit_log_partition: % is not the first day of a month', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF month < DATE '2000-01-01'
            OR month > (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '120 months')::date THEN
        RAISE EXCEPTION 'create_audit_log_partition: % is out of range', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    partition_name := 'audit_logs_' || to_char(month, '"y"YYYY"m"MM');
    -- Two runs at once (a restarted scheduler) wait for each other instead of racing to CREATE.
    PERFORM pg_advisory_xact_lock(hashtext('public.create_audit_log_partition'));

    SELECT c.oid INTO partition_oid FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relname = partition_name;
    IF partition_oid IS NULL THEN
        -- Bounds are UTC midnights, independent of the session's TimeZone.
        EXECUTE format(
            'CREATE TABLE public.%I PARTITION OF public.audit_logs FOR VALUES FROM (%L) TO (%L)',
            partition_name,
            to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00'
        );
        partition_oid := format('public.%I', partition_name)::regclass::oid;
    ELSIF NOT EXISTS (
        SELECT 1 FROM pg_inherits WHERE inhrelid = partition_oid AND inhparent = 'public.audit_logs'::regclass
    ) THEN
        RAISE EXCEPTION 'create_audit_log_partition: % exists but is not a partition of audit_logs', partition_name;
    END IF;

    -- Each step only when missing: a daily run on a complete partition takes no table lock at all.
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = partition_oid) THEN
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', partition_name);
    END IF;
    IF NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = partition_oid) THEN
        EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', partition_name);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_policy WHERE polrelid = partition_oid AND polname = 'organization_isolation'
    ) THEN
        EXECUTE format(
            'CREATE POLICY organization_isolation ON public.%I USING %s WITH CHECK %s',
            partition_name, policy_condition, policy_condition
        );
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger WHERE tgrelid = partition_oid AND tgname = 'audit_logs_no_truncate'
    ) THEN
        EXECUTE format(
            'CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON public.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION public.audit_logs_refuse_change()',
            partition_name
        );
    END IF;
    RETURN partition_name;
END
$function$
"""

FUNCTION_GRANTS_SQL = [
    "REVOKE ALL ON FUNCTION public.create_audit_log_partition(date) FROM PUBLIC",
    # Default privileges (tenants/db_roles.py) already grant EXECUTE to the app role where they exist when this
    # runs; a fresh database (the test database) gets its default privileges only after migrating.
    f"""
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE.replace("'", "''")}') THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION public.create_audit_log_partition(date) TO %I',
                           '{APP_ROLE.replace("'", "''")}');
        END IF;
    END
    $$
    """,
]

FORWARD_SQL = [
    "LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE",
    "ALTER TABLE audit_logs RENAME TO audit_logs_unpartitioned",
    # RLS off on the old table (dropped below) so the owner copies every organization's rows.
    "ALTER TABLE audit_logs_unpartitioned NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE audit_logs_unpartitioned DISABLE ROW LEVEL SECURITY",
    """
    DO $$
    BEGIN
        EXECUTE format('ALTER SEQUENCE %s RENAME TO audit_logs_unpartitioned_id_seq',
                       pg_get_serial_sequence('audit_logs_unpartitioned', 'id'));
    END
    $$
    """,
    f"CREATE TABLE audit_logs (id bigint NOT NULL, {COLUMN_DEFINITIONS}) PARTITION BY RANGE (created_at)",
    "CREATE SEQUENCE audit_logs_id_seq AS bigint OWNED BY audit_logs.id",
    "ALTER TABLE audit_logs ALTER COLUMN id SET DEFAULT nextval('audit_logs_id_seq'::regclass)",
    continue_sequence_sql("audit_logs_id_seq", "audit_logs_unpartitioned_id_seq", "audit_logs_unpartitioned"),
    TRIGGER_FUNCTION_SQL,
    FUNCTION_SQL,
    *FUNCTION_GRANTS_SQL,
    "CREATE TABLE audit_logs_default PARTITION OF audit_logs DEFAULT",
    *rls_sql("audit_logs_default"),
    "CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs_default "
    "FOR EACH STATEMENT EXECUTE FUNCTION public.audit_logs_refuse_change()",
    # A partition for every month that already holds rows (so the default partition starts empty) and for
    # this month and the next 3.
    """
    DO $$
    DECLARE
        this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
        month date;
    BEGIN
        FOR month IN
            SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM audit_logs_unpartitioned
            WHERE created_at >= TIMESTAMPTZ '2000-01-01 00:00:00+00' AND created_at < now()
            UNION
            SELECT (this_month + ahead * interval '1 month')::date FROM generate_series(0, 3) AS ahead
            ORDER BY 1
        LOOP
            PERFORM public.create_audit_log_partition(month);
        END LOOP;
    END
    $$
    """,
    # RLS on the parent is enabled only after the copy; the owner (FORCE binds it too) inserts every row.
    f"INSERT INTO audit_logs ({COLUMNS}) SELECT {COLUMNS} FROM audit_logs_unpartitioned ORDER BY id",
    "DROP TABLE audit_logs_unpartitioned",
    "ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_pkey PRIMARY KEY (id, created_at)",
    *INDEXES_AND_FOREIGN_KEYS,
    # Row triggers on a partitioned table are cloned onto every partition, present and future (PG 13+).
    "CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION public.audit_logs_refuse_change()",
    "CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs "
    "FOR EACH STATEMENT EXECUTE FUNCTION public.audit_logs_refuse_change()",
    *rls_sql("audit_logs"),
]

REVERSE_SQL = [
    "LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE",
    # Reading through the parent applies only the parent's policy: switch it off to copy every row.
    "ALTER TABLE audit_logs NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE audit_logs DISABLE ROW LEVEL SECURITY",
    f"""
    CREATE TABLE audit_logs_unpartitioned (
        id bigint GENERATED BY DEFAULT AS IDENTITY (SEQUENCE NAME audit_logs_unpartitioned_id_seq) NOT NULL,
        {COLUMN_DEFINITIONS}
    )
    """,
    f"INSERT INTO audit_logs_unpartitioned ({COLUMNS}) SELECT {COLUMNS} FROM audit_logs ORDER BY id",
    continue_sequence_sql("audit_logs_unpartitioned_id_seq", "audit_logs_id_seq", "audit_logs_unpartitioned"),
    "DROP TABLE audit_logs",  # with its partitions, triggers and sequence
    "DROP FUNCTION public.create_audit_log_partition(date)",
    "DROP FUNCTION public.audit_logs_refuse_change()",
    "ALTER TABLE audit_logs_unpartitioned RENAME TO audit_logs",
    "ALTER SEQUENCE audit_logs_unpartitioned_id_seq RENAME TO audit_logs_id_seq",
    "ALTER TABLE audit_logs ADD CONSTRAINT audit_logs_pkey PRIMARY KEY (id)",
    *INDEXES_AND_FOREIGN_KEYS,
    *rls_sql("audit_logs"),
]


class Migration(migrations.Migration):
    dependencies = [("tenants", "0005_sync_checkpoints_rls")]

    operations = [migrations.RunSQL(sql=FORWARD_SQL, reverse_sql=REVERSE_SQL)]
