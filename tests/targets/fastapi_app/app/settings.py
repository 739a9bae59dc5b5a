"""The app's own settings, from its environment (as alembic's env.py reads them too)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=lambda: os.environ["DATABASE_URL"])
    secret: str = field(default_factory=lambda: os.environ.get("APP_SECRET", "dev-secret"))
    admin_api_key: str = field(default_factory=lambda: os.environ.get("ADMIN_API_KEY", ""))
    version: str = "2.1.0"
    commit: str = field(default_factory=lambda: os.environ.get("APP_COMMIT", "unknown"))
    freeze: bool = field(default_factory=lambda: os.environ.get("APP_FREEZE") == "1")
    token_ttl_s: int = field(default_factory=lambda: int(os.environ.get("APP_TOKEN_TTL_S", "3600")))
    planted_bola: bool = field(default_factory=lambda: os.environ.get("APP_PLANTED_BOLA") == "1")
    planted_date_500: bool = field(default_factory=lambda: os.environ.get("APP_PLANTED_DATE_500") == "1")


def get_settings() -> Settings:
    return Settings()
