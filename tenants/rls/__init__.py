"""Row Level Security machinery: binding a unit of work to one organization, the database backend that
sends the binding with every cursor, the policy SQL that migrations install, and the database roles."""
