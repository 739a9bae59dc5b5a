"""Tables (SQLModel); the schema itself is made by the alembic revisions in migrations/versions."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(index=True, unique=True)
    password_hash: str
    role: str = "user"


class Note(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    owner_id: int = Field(foreign_key="app_user.id")
    body: str


class NoteIn(SQLModel):
    body: str = Field(min_length=1, max_length=2000)
