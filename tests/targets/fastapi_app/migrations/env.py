"""Alembic environment of the Notes API: the URL comes from the app's own settings, as in many real
projects (the ``sqlalchemy.url`` of alembic.ini is ignored)."""

from alembic import context
from app import models  # noqa: F401 - registers the tables on SQLModel.metadata
from app.settings import get_settings
from sqlalchemy import engine_from_config, pool
from sqlmodel import SQLModel

config = context.config
config.set_main_option("sqlalchemy.url", get_settings().database_url.replace("%", "%%"))
target_metadata = SQLModel.metadata

engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.",
                            poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
