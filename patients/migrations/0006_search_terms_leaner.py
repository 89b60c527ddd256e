"""Search terms, measured at 1M contacts (scripts/bench_patients.py):

* (contact_id, term) instead of (contact_id): a second search word is then a probe per candidate contact
  (4 ms) instead of a hash over the whole range of a common word (60 ms);
* one term fewer per contact, because each is a random-key btree insert on every synced contact: the
  reversed raw phone only when there is no E.164 form (the reversed E.164 digits already answer every
  "ends with" search). Existing terms stay valid; rows are refreshed as contacts change.
"""

from django.db import migrations

FUNCTION = r"""
CREATE OR REPLACE FUNCTION contact_search_terms_of(first_name text, last_name text, email text, phone_e164 text,
                                                   phone_raw text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT term), '{}') FROM (
        SELECT unnest(regexp_split_to_array(lower(concat_ws(' ', first_name, last_name, email)),
                                            '[^[:alnum:]]+')) AS term
        UNION ALL SELECT lower(nullif(email, ''))
        UNION ALL SELECT '#' || regexp_replace(phone_e164, '\D', '', 'g')
        UNION ALL SELECT '#' || regexp_replace(phone_raw, '\D', '', 'g')
        UNION ALL SELECT '~' || reverse(regexp_replace(coalesce(phone_e164, phone_raw), '\D', '', 'g'))
    ) words WHERE term IS NOT NULL AND term NOT IN ('', '#', '~')
$$;
"""

PREVIOUS_FUNCTION = r"""
CREATE OR REPLACE FUNCTION contact_search_terms_of(first_name text, last_name text, email text, phone_e164 text,
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
"""


class Migration(migrations.Migration):
    dependencies = [("patients", "0005_organization_fk_without_index")]

    operations = [
        migrations.RunSQL(
            [
                "CREATE INDEX contact_search_terms_contact_term_idx ON contact_search_terms (contact_id, term)",
                "DROP INDEX contact_search_terms_contact_idx",
                FUNCTION,
            ],
            [
                "CREATE INDEX contact_search_terms_contact_idx ON contact_search_terms (contact_id)",
                "DROP INDEX contact_search_terms_contact_term_idx",
                PREVIOUS_FUNCTION,
            ],
        )
    ]
