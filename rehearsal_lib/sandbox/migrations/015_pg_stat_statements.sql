-- Query statistics for slow-query review (the server preloads the library; see sandbox/manager.py).
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
