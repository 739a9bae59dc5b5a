-- Retention purge: access_log 30 days, data_exports 60 days. dry_run counts, else deletes.
CREATE OR REPLACE FUNCTION retention_purge(dry_run boolean DEFAULT true)
RETURNS TABLE (table_name text, would_delete bigint)
LANGUAGE plpgsql AS $$
BEGIN
    IF dry_run THEN
        RETURN QUERY
            SELECT 'access_log'::text, count(*) FROM access_log WHERE created_at < now() - interval '30 days'
            UNION ALL
            SELECT 'data_exports'::text, count(*) FROM data_exports WHERE requested_at < now() - interval '60 days';
        RETURN;
    END IF;
    DELETE FROM access_log WHERE created_at < now() - interval '30 days';
    GET DIAGNOSTICS would_delete = ROW_COUNT;
    table_name := 'access_log';
    RETURN NEXT;
    DELETE FROM data_exports WHERE requested_at < now() - interval '60 days';
    GET DIAGNOSTICS would_delete = ROW_COUNT;
    table_name := 'data_exports';
    RETURN NEXT;
END
$$;
