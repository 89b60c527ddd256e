"""Prefix search that works under Row Level Security.

RLS stops PostgreSQL from using trigram and full-text indexes (their operators are not leakproof), so a
search over 1M patients would scan. Text comparisons *are* leakproof, so each contact's searchable words
live in contact_search_terms, and a typed fragment becomes a btree range scan on (organization_id, term):
  * every word of the first name, last name and email (lower case), and the whole email;
  * '#' + the digits of the phone (E.164 and as entered), for "starts with" searches such as 0412…;
  * '~' + those digits reversed, for "ends with" searches such as the last four digits.
Statement-level triggers with transition tables keep the terms in step with contacts in one set-based
statement per write, whatever writes the contacts (sync, admin, demo).
"""

from django.db import migrations

from tenants.rls.policies import enable_rls

CREATE = r"""
CREATE TABLE contact_search_terms (
    organization_id uuid NOT NULL,
    term text COLLATE "C" NOT NULL,
    contact_id uuid NOT NULL REFERENCES contacts (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (organization_id, term, contact_id)
);
CREATE INDEX contact_search_terms_contact_idx ON contact_search_terms (contact_id);

CREATE FUNCTION contact_search_terms_of(first_name text, last_name text, email text, phone_e164 text,
                                        phone_raw text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT term), '{}') FROM (
        SELECT unnest(regexp_split_to_array(lower(concat_ws(' ', first_name, last_name, email)),
                                            '[^[:alnum:]]+')) AS term
        UNION ALL SELECT lower(nullif(email, ''))
        UNION ALL SELECT '#' || regexp_replace(phone_e164, '\D', '', 'g')
        UNION ALL SELECT '#' || regexp_replace(phone_raw, '\D', '', 'g')
        UNION ALL SELECT '~' || reverse(regexp_replace(phone_e164, '\D', '', 'g'))
        UNION ALL SELECT '~' || reverse(regexp_replace(phone_raw, '\D', '', 'g'))
    ) words WHERE term IS NOT NULL AND term NOT IN ('', '#', '~')
$$;

CREATE FUNCTION contacts_search_terms_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO contact_search_terms (organization_id, term, contact_id)
    SELECT n.organization_id, term, n.id
    FROM new_rows n,
         unnest(contact_search_terms_of(n.first_name, n.last_name, n.email, n.phone_e164, n.phone_raw)) term
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE FUNCTION contacts_search_terms_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only contacts whose searchable fields changed: a sync that touches other columns costs nothing here.
    DELETE FROM contact_search_terms t
    USING new_rows n JOIN old_rows o ON o.id = n.id
    WHERE t.contact_id = n.id
      AND (n.first_name, n.last_name, n.email, n.phone_e164, n.phone_raw)
          IS DISTINCT FROM (o.first_name, o.last_name, o.email, o.phone_e164, o.phone_raw);
    INSERT INTO contact_search_terms (organization_id, term, contact_id)
    SELECT n.organization_id, term, n.id
    FROM new_rows n JOIN old_rows o ON o.id = n.id,
         unnest(contact_search_terms_of(n.first_name, n.last_name, n.email, n.phone_e164, n.phone_raw)) term
    WHERE (n.first_name, n.last_name, n.email, n.phone_e164, n.phone_raw)
          IS DISTINCT FROM (o.first_name, o.last_name, o.email, o.phone_e164, o.phone_raw)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_search_terms_insert AFTER INSERT ON contacts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_search_terms_inserted();
CREATE TRIGGER contacts_search_terms_update AFTER UPDATE ON contacts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION contacts_search_terms_updated();
"""

DROP = """
DROP TRIGGER IF EXISTS contacts_search_terms_update ON contacts;
DROP TRIGGER IF EXISTS contacts_search_terms_insert ON contacts;
DROP FUNCTION IF EXISTS contacts_search_terms_updated();
DROP FUNCTION IF EXISTS contacts_search_terms_inserted();
DROP FUNCTION IF EXISTS contact_search_terms_of(text, text, text, text, text);
DROP TABLE IF EXISTS contact_search_terms;
"""


class Migration(migrations.Migration):
    dependencies = [("patients", "0003_row_level_security")]

    operations = [
        migrations.RunSQL(CREATE, DROP),
        enable_rls("contact_search_terms"),
    ]
