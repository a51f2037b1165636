"""Alembic environment: runs on the connection Haven hands over (see haven.db.session.migrate)."""

from alembic import context

from haven.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - `alembic` CLI use: take the URL from the environment
    import os

    from haven.db.session import make_engine

    connection = make_engine(os.environ["HAVEN_DATABASE_URL"]).connect()

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
