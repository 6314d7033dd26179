-- Each ordinary table's row count in this database, as one JSON object {"schema.table": count}, on one line.
-- Used by the backup service (its record after each backup) and by `db verify` (on the restored copy).
SELECT coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname),
                (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname,
                                                            c.relname), false, true, '')))[1]::text::bigint
                ORDER BY n.nspname, c.relname), '{}')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%';
