"""Everything that talks to PostgreSQL: the embedded server, migrations, the
pool, the named queries and the repository. No SQL lives outside this package."""
