"""``public.sign_in_version(organization_id, clerk_user_id, clerk_session_id)``: a fingerprint of what signing in
reads — the organization's, the user's and the membership's row versions (``xmin``: every committed update makes
a new one) and whether Clerk ended the session. tenants/clerk/bound_read.py asks for it in the statement that
binds a request's connection and reuses the rows it read before while the fingerprint is unchanged.

SECURITY INVOKER: the membership is read as the caller, under RLS, so only the bound organization's row can
count. Executable by the app role only (the owner's default privileges grant it; the grant here covers a
database migrated before them). plpgsql with a fixed search_path keeps its plan for the life of the connection; every request's own
search_path would otherwise have it planned again. STABLE: it reads the calling statement's snapshot.
"""

from django.conf import settings
from django.db import migrations

from tenants.rls.policies import for_role_sql

FUNCTION = "public.sign_in_version(uuid, text, text)"

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION public.sign_in_version(organization_id uuid, clerk_user_id text, clerk_session_id text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    RETURN concat_ws('.',
        coalesce((SELECT o.xmin::text FROM public.organizations o WHERE o.id = sign_in_version.organization_id), '-'),
        coalesce((SELECT u.xmin::text || '.' || coalesce(m.xmin::text, '-')
           FROM public.users u
           LEFT JOIN public.organization_members m
             ON m.organization_id = sign_in_version.organization_id AND m.user_id = u.id
          WHERE u.clerk_user_id = sign_in_version.clerk_user_id), '-.-'),
        EXISTS (SELECT 1 FROM public.ended_clerk_sessions e
                 WHERE e.clerk_session_id = sign_in_version.clerk_session_id)::text);
END
$function$;
"""


def grants_sql() -> list[str]:
    return [f"REVOKE ALL ON FUNCTION {FUNCTION} FROM PUBLIC",
            for_role_sql(settings.DATABASE_APP_ROLE, f"GRANT EXECUTE ON FUNCTION {FUNCTION} TO %I")]


class Migration(migrations.Migration):
    dependencies = [("tenants", "0014_audit_log_archival")]

    operations = [
        migrations.RunSQL(
            sql=[FUNCTION_SQL, *grants_sql()],
            reverse_sql=f"DROP FUNCTION IF EXISTS {FUNCTION}",
        ),
    ]
