"""contact_search_terms without a foreign key to contacts.

The deferred foreign-key check cost about 13% of a synced page (0.9 s of 6.9 s per 20,000 new contacts at
1M contacts, scripts/bench_patients.py). The terms are written only by the triggers on contacts, and an
orphan term could only add a candidate that the join to contacts then drops; a statement-level delete
trigger removes the terms of contacts that are deleted outright (which the app itself never does).
"""

from django.db import migrations

FORWARD = """
ALTER TABLE contact_search_terms DROP CONSTRAINT contact_search_terms_contact_id_fkey;

CREATE FUNCTION contacts_search_terms_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM contact_search_terms t USING old_rows o WHERE t.contact_id = o.id;
    RETURN NULL;
END $$;

CREATE TRIGGER contacts_search_terms_delete AFTER DELETE ON contacts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION contacts_search_terms_deleted();
"""

REVERSE = """
DROP TRIGGER IF EXISTS contacts_search_terms_delete ON contacts;
DROP FUNCTION IF EXISTS contacts_search_terms_deleted();
ALTER TABLE contact_search_terms ADD CONSTRAINT contact_search_terms_contact_id_fkey
    FOREIGN KEY (contact_id) REFERENCES contacts (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED;
"""


class Migration(migrations.Migration):
    dependencies = [("patients", "0006_search_terms_leaner")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
