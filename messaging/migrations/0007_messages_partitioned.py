"""messages becomes partitioned by month (RANGE on sent_at), in every organization's schema.

What this migration builds in the schema it runs in (messaging is a tenant app):

* ``messages`` is re-created as a partitioned table with the columns Django created (same order, types,
  nullability). Its primary key is (id, sent_at) because a partitioned table's keys must contain the
  partition key; Django still treats ``id`` as the pk, which stays unique because every id comes from the
  one sequence ``messages_id_seq`` (continued from the old identity, so ids keep increasing). The vendor
  key becomes unique (provider, external_id, sent_at) — a message's time never changes at the vendor, so
  an upsert names all three (ON CONFLICT (provider, external_id, sent_at)). The organization column left the
  key: a schema holds one organization's rows. The other indexes and the foreign keys are re-created with
  the names Django gave them. Existing rows are copied.
* partitions: ``messages_default`` (an insert never fails for want of a partition) and one per month,
  ``messages_yYYYYmMM``, bounded in UTC: every month that already holds rows, this month and the next 3.
  The scheduled job ``messaging.partitions.create_message_partitions`` keeps creating months ahead, and
  moves rows out of the default partition (history synced before its month had a partition).
* Row Level Security: ENABLE + FORCE and the organization policy (tenants.rls.policies.TENANT_CONDITION;
  tenant tables never get the platform policy) on the parent *and on every partition*: a query that names a
  partition directly is checked against the partition's own policies, not the parent's.
* ``create_messages_partition(month date)`` in the schema: the one piece of SQL that creates a month's
  partition, used by this migration and by the scheduled job; SECURITY DEFINER like the audit log's
  (tenants/migrations/0006), see the comment above function_sql.

Django's state only learns the new unique constraint (SeparateDatabaseAndState); the partitioning itself is
invisible to the ORM. Reverse: rebuilds the plain table (identity id, pk (id), the old unique key).
"""

from django.conf import settings
from django.db import migrations, models

from tenants.rls.policies import TENANT_CONDITION, continue_sequence_sql, for_role_sql, forced_policy_sql, wrap

POLICY_CONDITION = wrap(TENANT_CONDITION)
APP_ROLE = settings.DATABASE_APP_ROLE

COLUMNS = (
    "created_at, updated_at, id, provider, external_id, direction, content, content_type, sent_at, "
    "conversation_id, organization_id, attachments, private, sender_name"
)
# As Django created them (0001..0006): same order, types and nullability.
COLUMN_DEFINITIONS = """
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    id bigint NOT NULL,
    provider varchar(20) NOT NULL,
    external_id varchar(64) NOT NULL,
    direction varchar(10) NOT NULL,
    content text NOT NULL,
    content_type varchar(30) NOT NULL,
    sent_at timestamp with time zone NOT NULL,
    conversation_id uuid NOT NULL,
    organization_id uuid NOT NULL,
    attachments jsonb NOT NULL,
    private boolean NOT NULL,
    sender_name varchar(200) NOT NULL
"""
# The names Django gave the indexes and foreign keys (deterministic), so they read the same after.
# Adding a foreign key checks the existing rows with a query that Row Level Security applies to: with FORCE on
# conversations and nothing bound, the owner would see no conversation and refuse every message. Lifted for
# the check only, inside this migration's transaction.
FOREIGN_KEYS = [
    "ALTER TABLE conversations NO FORCE ROW LEVEL SECURITY",
    "ALTER TABLE messages ADD CONSTRAINT messages_conversation_id_5ef638db_fk_conversations_id "
    "FOREIGN KEY (conversation_id) REFERENCES conversations (id) DEFERRABLE INITIALLY DEFERRED",
    "ALTER TABLE messages ADD CONSTRAINT messages_organization_id_f55ad7de_fk_organizations_id "
    "FOREIGN KEY (organization_id) REFERENCES public.organizations (id) DEFERRABLE INITIALLY DEFERRED",
    "ALTER TABLE conversations FORCE ROW LEVEL SECURITY",
]
INDEXES = [
    "CREATE INDEX messages_conversation_id_5ef638db ON messages (conversation_id)",
    "CREATE INDEX messages_conversation_idx ON messages (conversation_id, sent_at)",
    "CREATE INDEX messages_org_sent_idx ON messages (organization_id, sent_at)",
]


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def rls_sql(table: str) -> list[str]:
    return forced_policy_sql(table, TENANT_CONDITION)


# Creating a partition needs ownership of messages (the owner role's right). The scheduled job runs as the
# app role, so the function is SECURITY DEFINER (it runs as the role that ran this migration, the owner).
# That is safe because it can do one thing only: given a validated month (first day of a month, 2000-01 ..
# 120 months ahead), create that month's partition of this schema's messages with the fixed name, bounds,
# RLS (ENABLE + FORCE) and the fixed policy, or do nothing if it is complete. No caller-supplied text reaches
# the SQL (name and bounds derive from a date; the schema is fixed when the function is created),
# search_path is pinned so nothing can be shadowed, and EXECUTE is revoked from PUBLIC and granted to the app
# role only. Unlike the audit log, messages arrive with their vendor's time: a sync of old history lands in
# messages_default, so the function moves the month's rows out of the default partition into the new table
# before attaching it. Those rows are read under FORCE RLS, so only the bound organization's rows move — in
# an organization's schema that is all of them; with nothing bound, nothing moves and the ATTACH refuses
# (the default partition still holds the month), which fails the call and changes nothing. lock_timeout
# keeps a blocked ATTACH from stalling message writes: the job fails and retries on its next run.
def function_sql(schema: str) -> str:
    s = quote_ident(schema)
    return f"""
CREATE FUNCTION {s}.create_messages_partition(month date) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {s}, pg_temp
SET lock_timeout = '5s'
AS $function$
DECLARE
    schema_name constant text := {quote_literal(schema)};
    policy_condition constant text := $policy${POLICY_CONDITION}$policy$;
    partition_name text;
    partition_oid oid;
    lower_bound text;
    upper_bound text;
BEGIN
    IF month IS NULL THEN
        RAISE EXCEPTION 'create_messages_partition: month is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF month <> date_trunc('month', month)::date THEN
        RAISE EXCEPTION 'create_messages_partition: % is not the first day of a month', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF month < DATE '2000-01-01'
            OR month > (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '120 months')::date THEN
        RAISE EXCEPTION 'create_messages_partition: % is out of range', month
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    partition_name := 'messages_' || to_char(month, '"y"YYYY"m"MM');
    -- Bounds are UTC midnights, independent of the session's TimeZone.
    lower_bound := to_char(month, 'YYYY-MM-DD') || ' 00:00:00+00';
    upper_bound := to_char((month + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00';
    -- Two runs at once (a restarted scheduler) wait for each other instead of racing to CREATE.
    PERFORM pg_advisory_xact_lock(hashtext(schema_name || '.create_messages_partition'));

    SELECT c.oid INTO partition_oid FROM pg_class c
    WHERE c.relnamespace = schema_name::regnamespace AND c.relname = partition_name;
    IF partition_oid IS NULL THEN
        EXECUTE format('CREATE TABLE %I.%I (LIKE %I.messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       schema_name, partition_name, schema_name);
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I.messages_default WHERE sent_at >= %L::timestamptz '
            'AND sent_at < %L::timestamptz RETURNING *) INSERT INTO %I.%I SELECT * FROM moved',
            schema_name, lower_bound, upper_bound, schema_name, partition_name
        );
        EXECUTE format('ALTER TABLE %I.messages ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                       schema_name, schema_name, partition_name, lower_bound, upper_bound);
        partition_oid := format('%I.%I', schema_name, partition_name)::regclass::oid;
    ELSIF NOT EXISTS (
        SELECT 1 FROM pg_inherits
        WHERE inhrelid = partition_oid AND inhparent = format('%I.messages', schema_name)::regclass
    ) THEN
        RAISE EXCEPTION 'create_messages_partition: % exists but is not a partition of messages', partition_name;
    END IF;

    -- Each step only when missing: a daily run on a complete partition takes no table lock at all.
    IF NOT (SELECT relrowsecurity FROM pg_class WHERE oid = partition_oid) THEN
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', schema_name, partition_name);
    END IF;
    IF NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = partition_oid) THEN
        EXECUTE format('ALTER TABLE %I.%I FORCE ROW LEVEL SECURITY', schema_name, partition_name);
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM pg_policy WHERE polrelid = partition_oid AND polname = 'organization_isolation'
    ) THEN
        EXECUTE format(
            'CREATE POLICY organization_isolation ON %I.%I USING %s WITH CHECK %s',
            schema_name, partition_name, policy_condition, policy_condition
        );
    END IF;
    RETURN partition_name;
END
$function$
"""


def function_grants_sql(schema: str) -> list[str]:
    function = f"{quote_ident(schema)}.create_messages_partition(date)"
    return [
        f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
        # Default privileges (tenants/rls/roles.py) already grant EXECUTE to the app role where they exist; a
        # schema migrated before them (the test database's first migration) gets the grant here.
        for_role_sql(APP_ROLE, f"GRANT EXECUTE ON FUNCTION {function} TO %I"),
    ]


def forward_sql(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE",
        "ALTER TABLE messages RENAME TO messages_unpartitioned",
        # RLS off on the old table (dropped below) so the owner copies every row.
        "ALTER TABLE messages_unpartitioned NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE messages_unpartitioned DISABLE ROW LEVEL SECURITY",
        """
        DO $$
        BEGIN
            EXECUTE format('ALTER SEQUENCE %s RENAME TO messages_unpartitioned_id_seq',
                           pg_get_serial_sequence('messages_unpartitioned', 'id'));
        END
        $$
        """,
        f"CREATE TABLE messages ({COLUMN_DEFINITIONS}) PARTITION BY RANGE (sent_at)",
        "CREATE SEQUENCE messages_id_seq AS bigint OWNED BY messages.id",
        f"ALTER TABLE messages ALTER COLUMN id SET DEFAULT nextval('{s}.messages_id_seq'::regclass)",
        continue_sequence_sql(f"{s}.messages_id_seq", "messages_unpartitioned_id_seq", "messages_unpartitioned"),
        function_sql(schema),
        *function_grants_sql(schema),
        "CREATE TABLE messages_default PARTITION OF messages DEFAULT",
        *rls_sql("messages_default"),
        # A partition for every month that already holds rows (so the default partition starts empty) and for
        # this month and the next 3.
        f"""
        DO $$
        DECLARE
            this_month date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
            month date;
        BEGIN
            FOR month IN
                SELECT DISTINCT date_trunc('month', sent_at AT TIME ZONE 'UTC')::date FROM messages_unpartitioned
                WHERE sent_at >= TIMESTAMPTZ '2000-01-01 00:00:00+00'
                  AND sent_at < now() + interval '119 months'
                UNION
                SELECT (this_month + ahead * interval '1 month')::date FROM generate_series(0, 3) AS ahead
                ORDER BY 1
            LOOP
                PERFORM {s}.create_messages_partition(month);
            END LOOP;
        END
        $$
        """,
        # RLS on the parent is enabled only after the copy; the owner (FORCE binds it too) inserts every row.
        f"INSERT INTO messages ({COLUMNS}) SELECT {COLUMNS} FROM messages_unpartitioned ORDER BY id",
        "DROP TABLE messages_unpartitioned",
        "ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id, sent_at)",
        "ALTER TABLE messages ADD CONSTRAINT messages_external_sent_unique UNIQUE (provider, external_id, sent_at)",
        *INDEXES,
        *FOREIGN_KEYS,
        *rls_sql("messages"),
    ]


def reverse_sql(schema: str) -> list[str]:
    return [
        "LOCK TABLE messages IN ACCESS EXCLUSIVE MODE",
        # Reading through the parent applies only the parent's policy: switch it off to copy every row.
        "ALTER TABLE messages NO FORCE ROW LEVEL SECURITY",
        "ALTER TABLE messages DISABLE ROW LEVEL SECURITY",
        f"""
        CREATE TABLE messages_unpartitioned (
            {COLUMN_DEFINITIONS.replace("id bigint NOT NULL",
                                        "id bigint GENERATED BY DEFAULT AS IDENTITY "
                                        "(SEQUENCE NAME messages_unpartitioned_id_seq) NOT NULL")}
        )
        """,
        f"INSERT INTO messages_unpartitioned ({COLUMNS}) SELECT {COLUMNS} FROM messages ORDER BY id",
        continue_sequence_sql("messages_unpartitioned_id_seq", "messages_id_seq", "messages_unpartitioned"),
        "DROP TABLE messages",  # with its partitions and sequence
        f"DROP FUNCTION {quote_ident(schema)}.create_messages_partition(date)",
        "ALTER TABLE messages_unpartitioned RENAME TO messages",
        "ALTER SEQUENCE messages_unpartitioned_id_seq RENAME TO messages_id_seq",
        "ALTER TABLE messages ADD CONSTRAINT messages_pkey PRIMARY KEY (id)",
        "ALTER TABLE messages ADD CONSTRAINT messages_external_unique "
        "UNIQUE (organization_id, provider, external_id)",
        *INDEXES,
        *FOREIGN_KEYS,
        *rls_sql("messages"),
    ]


def run(builder):
    def apply(apps, schema_editor):
        for statement in builder(schema_editor.connection.schema_name):
            schema_editor.execute(statement, params=None)

    return apply


class Migration(migrations.Migration):
    dependencies = [("messaging", "0006_conversation_inbox_fields_message_notes_attachments")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(run(forward_sql), run(reverse_sql))],
            state_operations=[
                migrations.RemoveConstraint(model_name="message", name="messages_external_unique"),
                migrations.AddConstraint(
                    model_name="message",
                    constraint=models.UniqueConstraint(
                        fields=["provider", "external_id", "sent_at"], name="messages_external_sent_unique"
                    ),
                ),
            ],
        ),
    ]
