"""Full-text message search that keeps both walls (see messaging/search.py for the design and its numbers).

In the schema it runs in (messaging is a tenant app) this migration builds:

* ``message_search_documents (message_id, sent_at, conversation_id, document tsvector)``: one row per
  message, GIN-indexed, with no organization_id. Row Level Security is ENABLED with *no policy* and not
  forced: every role but the table's owner sees no row and can write none, whatever grants it holds
  (``setup_database`` re-grants table privileges on whole schemas), and the owner — the role the two
  functions below run as — reads it without RLS, which is what lets PostgreSQL use the GIN index.
* statement-level triggers on ``messages`` (the partitioned parent; transition tables cover every
  partition) that keep the documents in step in one set-based statement per write. They are SECURITY
  DEFINER because the writer (the app role) cannot touch the documents table. A document is built with the
  organization's text search configuration at write time (``message_search_config()``: 'english' for
  AU/NZ/GB/US/CA/IE, else 'simple').
* ``message_search(search_text, only_conversation, only_contact, max_rows)``: SECURITY DEFINER, fixed to
  this schema. It reads the bound organization itself (``app.current_organization``), and returns nothing
  unless that is this schema's (active) organization: no caller can pass another organization in, and
  calling another schema's function (or this one with another schema on the search_path) returns nothing.
  It returns ids, times and a highlighted snippet built from ``messages``, which it reads under that table's
  forced RLS policy — a third check. EXECUTE is granted to the app role only.
"""

from django.conf import settings
from django.db import migrations

APP_ROLE = settings.DATABASE_APP_ROLE
# Copied, not imported (a migration is history): messaging.search.ENGLISH_COUNTRIES.
ENGLISH_COUNTRIES = ("AU", "NZ", "GB", "US", "CA", "IE")
# Private-use characters mark the matches in ts_headline's output; messaging/search.py escapes the snippet and
# turns them into <mark>…</mark>. They are stripped from the content first, so a message cannot fake a mark.
START_MARK, STOP_MARK = "\ue000", "\ue001"
MAX_ROWS = 200
# Over the whole inbox, the newest this many documents are tried first: a word that fills a page from them is
# common, and the GIN index would hand over all its (many) matches to be sorted.
RECENT_PROBE = 20_000


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def quote_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def forward_sql(schema: str) -> list[str]:
    s, schema_literal = quote_ident(schema), quote_literal(schema)
    countries = ", ".join(quote_literal(country) for country in ENGLISH_COUNTRIES)
    role = APP_ROLE.replace("'", "''")
    config_case = (
        f"CASE WHEN o.country IN ({countries}) THEN 'pg_catalog.english' ELSE 'pg_catalog.simple' END::regconfig"
    )
    headline_options = (
        f"StartSel={START_MARK}, StopSel={STOP_MARK}, MaxWords=30, MinWords=12, ShortWord=2, "
        "MaxFragments=2, FragmentDelimiter=\" … \""
    )
    return [
        """
        CREATE TABLE message_search_documents (
            message_id bigint PRIMARY KEY,
            sent_at timestamp with time zone NOT NULL,
            conversation_id uuid NOT NULL,
            document tsvector NOT NULL
        )
        """,
        "CREATE INDEX message_search_documents_document_idx ON message_search_documents USING gin (document)",
        "CREATE INDEX message_search_documents_sent_idx ON message_search_documents (sent_at DESC, message_id DESC)",
        "CREATE INDEX message_search_documents_conversation_idx "
        "ON message_search_documents (conversation_id, sent_at DESC, message_id DESC)",
        "ALTER TABLE message_search_documents ENABLE ROW LEVEL SECURITY",  # no policy, no FORCE: owner only
        "REVOKE ALL ON message_search_documents FROM PUBLIC",
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE format('REVOKE ALL ON {s}.message_search_documents FROM %I', '{role}');
            END IF;
        END
        $$
        """,
        f"""
        CREATE FUNCTION {s}.message_search_config() RETURNS regconfig
        LANGUAGE sql STABLE
        SET search_path = pg_catalog, pg_temp
        AS $function$
            SELECT coalesce(
                (SELECT {config_case} FROM public.organizations o WHERE o.schema_name = {schema_literal}),
                'pg_catalog.simple'::regconfig)
        $function$
        """,
        f"""
        CREATE FUNCTION {s}.messages_search_inserted() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = {s}, pg_temp
        AS $function$
        DECLARE
            config regconfig := {s}.message_search_config();
        BEGIN
            INSERT INTO {s}.message_search_documents (message_id, sent_at, conversation_id, document)
            SELECT n.id, n.sent_at, n.conversation_id, to_tsvector(config, n.content) FROM new_rows n
            ON CONFLICT (message_id) DO UPDATE SET sent_at = EXCLUDED.sent_at,
                conversation_id = EXCLUDED.conversation_id, document = EXCLUDED.document;
            RETURN NULL;
        END
        $function$
        """,
        f"""
        CREATE FUNCTION {s}.messages_search_updated() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = {s}, pg_temp
        AS $function$
        DECLARE
            config regconfig := {s}.message_search_config();
        BEGIN
            -- Only messages whose searchable fields changed: a sync re-sending a page rewrites nothing here.
            INSERT INTO {s}.message_search_documents (message_id, sent_at, conversation_id, document)
            SELECT n.id, n.sent_at, n.conversation_id, to_tsvector(config, n.content)
            FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.content, n.sent_at, n.conversation_id) IS DISTINCT FROM (o.content, o.sent_at, o.conversation_id)
            ON CONFLICT (message_id) DO UPDATE SET sent_at = EXCLUDED.sent_at,
                conversation_id = EXCLUDED.conversation_id, document = EXCLUDED.document;
            RETURN NULL;
        END
        $function$
        """,
        f"""
        CREATE FUNCTION {s}.messages_search_deleted() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = {s}, pg_temp
        AS $function$
        BEGIN
            DELETE FROM {s}.message_search_documents d USING old_rows o WHERE d.message_id = o.id;
            RETURN NULL;
        END
        $function$
        """,
        "CREATE TRIGGER messages_search_insert AFTER INSERT ON messages REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION messages_search_inserted()",
        "CREATE TRIGGER messages_search_update AFTER UPDATE ON messages "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION messages_search_updated()",
        "CREATE TRIGGER messages_search_delete AFTER DELETE ON messages REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION messages_search_deleted()",
        # The hits come from the documents alone, by plans bounded whatever the planner estimates (on 5M
        # messages it walked the time index for a rare word, filtering every row: seconds):
        #   * within a thread or a contact's threads: bitmap scans only (their conversations' documents, and
        #     the GIN index), so the work is bounded by the smaller of the two;
        #   * over the whole inbox: the newest RECENT_PROBE documents first (a bounded walk of the time index);
        #     a word that fills the page from them is done. Otherwise it is rarer than a page in RECENT_PROBE,
        #     so its matches are few, and the GIN index (bitmap scans only) fetches and sorts all of them.
        # The planner settings are changed for single statements with set_config(…, true); the function's
        # own SET clauses restore the caller's values when it returns. Then each hit's content is fetched by
        # its key (id, sent_at), one partition each, for the snippet (one join hashed every partition).
        f"""
        CREATE FUNCTION {s}.message_search(search_text text, only_conversation uuid, only_contact uuid,
                                           max_rows integer)
        RETURNS TABLE (message_id bigint, conversation_id uuid, sent_at timestamp with time zone, snippet text)
        LANGUAGE plpgsql STABLE SECURITY DEFINER
        SET search_path = {s}, pg_temp
        SET enable_seqscan = on
        SET enable_indexscan = on
        SET enable_bitmapscan = on
        AS $function$
        DECLARE
            bound_text text := current_setting('app.current_organization', true);
            own_id uuid;
            config regconfig;
            query tsquery;
            wanted integer := least(greatest(coalesce(max_rows, 50), 1), {MAX_ROWS});
            threads uuid[];
            candidates integer;
            hit_ids bigint[];
            hit_times timestamp with time zone[];
            hit_conversations uuid[];
        BEGIN
            SELECT o.id, {config_case} INTO own_id, config
            FROM public.organizations o WHERE o.schema_name = {schema_literal} AND o.is_active;
            -- The organization comes from the session's binding, never from an argument: only this schema's
            -- own organization, bound, gets anything back.
            IF own_id IS NULL OR coalesce(bound_text, '') = '' OR bound_text <> own_id::text THEN
                RETURN;
            END IF;
            query := websearch_to_tsquery(config, coalesce(search_text, ''));
            IF numnode(query) = 0 THEN
                RETURN;
            END IF;
            IF only_conversation IS NOT NULL OR only_contact IS NOT NULL THEN
                IF only_conversation IS NOT NULL THEN
                    threads := ARRAY[only_conversation];
                ELSE  -- read under conversations' forced RLS
                    SELECT array_agg(c.id) INTO threads FROM {s}.conversations c WHERE c.contact_id = only_contact;
                END IF;
                IF threads IS NULL THEN
                    RETURN;
                END IF;
                PERFORM set_config('enable_seqscan', 'off', true);
                PERFORM set_config('enable_indexscan', 'off', true);
                EXECUTE $hits$
                    SELECT array_agg(message_id ORDER BY sent_at DESC, message_id DESC),
                           array_agg(sent_at ORDER BY sent_at DESC, message_id DESC),
                           array_agg(conversation_id ORDER BY sent_at DESC, message_id DESC)
                    FROM (
                        SELECT d.message_id, d.sent_at, d.conversation_id
                        FROM {s}.message_search_documents d
                        WHERE d.conversation_id = ANY($2) AND d.document @@ $1
                        ORDER BY d.sent_at DESC, d.message_id DESC
                        LIMIT $3
                    ) hits
                $hits$ INTO hit_ids, hit_times, hit_conversations USING query, threads, wanted;
            ELSE
                PERFORM set_config('enable_bitmapscan', 'off', true);
                EXECUTE $hits$
                    SELECT array_agg(message_id ORDER BY sent_at DESC, message_id DESC),
                           array_agg(sent_at ORDER BY sent_at DESC, message_id DESC),
                           array_agg(conversation_id ORDER BY sent_at DESC, message_id DESC)
                    FROM (
                        SELECT recent.message_id, recent.sent_at, recent.conversation_id
                        FROM (
                            SELECT d.message_id, d.sent_at, d.conversation_id, d.document
                            FROM {s}.message_search_documents d
                            ORDER BY d.sent_at DESC, d.message_id DESC
                            LIMIT {RECENT_PROBE}
                        ) recent
                        WHERE recent.document @@ $1
                        ORDER BY recent.sent_at DESC, recent.message_id DESC
                        LIMIT $2
                    ) hits
                $hits$ INTO hit_ids, hit_times, hit_conversations USING query, wanted;
                IF coalesce(array_length(hit_ids, 1), 0) < wanted THEN
                    PERFORM set_config('enable_bitmapscan', 'on', true);
                    PERFORM set_config('enable_seqscan', 'off', true);
                    PERFORM set_config('enable_indexscan', 'off', true);
                    EXECUTE $hits$
                        SELECT array_agg(message_id ORDER BY sent_at DESC, message_id DESC),
                               array_agg(sent_at ORDER BY sent_at DESC, message_id DESC),
                               array_agg(conversation_id ORDER BY sent_at DESC, message_id DESC)
                        FROM (
                            SELECT d.message_id, d.sent_at, d.conversation_id
                            FROM {s}.message_search_documents d WHERE d.document @@ $1
                            ORDER BY d.sent_at DESC, d.message_id DESC
                            LIMIT $2
                        ) hits
                    $hits$ INTO hit_ids, hit_times, hit_conversations USING query, wanted;
                END IF;
            END IF;
            PERFORM set_config('enable_seqscan', 'on', true);
            PERFORM set_config('enable_indexscan', 'on', true);
            PERFORM set_config('enable_bitmapscan', 'on', true);
            IF hit_ids IS NULL THEN
                RETURN;
            END IF;
            RETURN QUERY
            SELECT h.id, h.conversation, h.at,
                   ts_headline(config, translate(m.content, U&'\\E000\\E001', ''), query,
                               {quote_literal(headline_options)})
            FROM unnest(hit_ids, hit_times, hit_conversations) WITH ORDINALITY AS h(id, at, conversation, position)
            CROSS JOIN LATERAL (  -- under messages' forced RLS: the binding is checked once more
                SELECT m.content FROM {s}.messages m WHERE m.id = h.id AND m.sent_at = h.at
            ) m
            ORDER BY h.position;
        END
        $function$
        """,
        f"REVOKE ALL ON FUNCTION {s}.message_search(text, uuid, uuid, integer) FROM PUBLIC",
        f"REVOKE ALL ON FUNCTION {s}.messages_search_inserted() FROM PUBLIC",
        f"REVOKE ALL ON FUNCTION {s}.messages_search_updated() FROM PUBLIC",
        f"REVOKE ALL ON FUNCTION {s}.messages_search_deleted() FROM PUBLIC",
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION {s}.message_search(text, uuid, uuid, integer) TO %I',
                               '{role}');
                EXECUTE format('REVOKE ALL ON FUNCTION {s}.messages_search_inserted() FROM %I', '{role}');
                EXECUTE format('REVOKE ALL ON FUNCTION {s}.messages_search_updated() FROM %I', '{role}');
                EXECUTE format('REVOKE ALL ON FUNCTION {s}.messages_search_deleted() FROM %I', '{role}');
            END IF;
        END
        $$
        """,
        # Messages written before this migration: read by the owner with the parent's RLS lifted for the copy.
        "ALTER TABLE messages NO FORCE ROW LEVEL SECURITY",
        f"""
        INSERT INTO message_search_documents (message_id, sent_at, conversation_id, document)
        SELECT id, sent_at, conversation_id, to_tsvector({s}.message_search_config(), content) FROM messages
        """,
        "ALTER TABLE messages FORCE ROW LEVEL SECURITY",
    ]


def reverse_sql(schema: str) -> list[str]:
    s = quote_ident(schema)
    return [
        "DROP TRIGGER IF EXISTS messages_search_insert ON messages",
        "DROP TRIGGER IF EXISTS messages_search_update ON messages",
        "DROP TRIGGER IF EXISTS messages_search_delete ON messages",
        f"DROP FUNCTION IF EXISTS {s}.message_search(text, uuid, uuid, integer)",
        f"DROP FUNCTION IF EXISTS {s}.messages_search_inserted()",
        f"DROP FUNCTION IF EXISTS {s}.messages_search_updated()",
        f"DROP FUNCTION IF EXISTS {s}.messages_search_deleted()",
        f"DROP FUNCTION IF EXISTS {s}.message_search_config()",
        "DROP TABLE IF EXISTS message_search_documents",
    ]


def run(builder):
    def apply(apps, schema_editor):
        for statement in builder(schema_editor.connection.schema_name):
            schema_editor.execute(statement, params=None)

    return apply


class Migration(migrations.Migration):
    dependencies = [("messaging", "0007_messages_partitioned")]

    operations = [migrations.RunPython(run(forward_sql), run(reverse_sql))]
