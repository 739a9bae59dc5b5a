DROP FUNCTION retention_purge(boolean);
