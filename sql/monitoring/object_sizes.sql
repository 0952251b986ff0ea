-- object_sizes: on-disk size of every refreshed object (with indexes and TOAST),
-- its live and dead rows. Dead rows pile up from the merge pattern's updates and
-- deletes; autovacuum should keep n_dead_tup well under n_live_tup.
SELECT n.nspname || '.' || c.relname                     AS object_name,
       CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'table' END AS kind,
       pg_total_relation_size(c.oid)                     AS total_bytes,
       pg_size_pretty(pg_total_relation_size(c.oid))     AS total_size,
       s.n_live_tup                                      AS live_rows,
       s.n_dead_tup                                      AS dead_rows,
       s.last_autovacuum
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE (n.nspname = 'analytics' AND c.relkind = 'm')
   OR (n.nspname IN ('reporting', 'dashboards') AND c.relkind = 'r')
ORDER BY total_bytes DESC;
