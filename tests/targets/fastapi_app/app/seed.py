"""Create users: ``python -m app.seed NAME:PASSWORD:ROLE ...`` (DATABASE_URL from the environment)."""

from __future__ import annotations

import sys

from sqlmodel import Session, create_engine

from app.models import User
from app.security import hash_password
from app.settings import get_settings

if __name__ == "__main__":
    with Session(create_engine(get_settings().database_url)) as db:
        for spec in sys.argv[1:]:
            name, password, role = spec.split(":")
            db.add(User(username=name, password_hash=hash_password(password), role=role))
        db.commit()
