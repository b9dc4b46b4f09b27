"""The store: the source of truth behind the Redis caches.

Workspace files (modules, requirements.txt) and the requirements history live
in a SQL database, SQLite in the data directory by default or PostgreSQL when
`DATABASE_URL` names one; `migrate.upgrade_to_head` creates the schema.
"""
