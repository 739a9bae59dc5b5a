"""Low-level probes: HTTP (httpx) and SQL (SQLAlchemy + psycopg), each reporting failures as data."""
