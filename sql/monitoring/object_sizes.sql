-- object_sizes: on-disk size of every refreshed object (with indexes and TOAST),
-- its live and dead rows. Dead rows pile up from the merge pattern's updates and
-- deletes; autovacuum should keep n_dead_tup well under n_live_tup. The objects
-- come from the audit trail (etl_audit.refreshed_objects), as the latest run read them.
WITH object AS (
    SELECT object_name FROM etl_audit.refreshed_objects
)
SELECT o.object_name,
       CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'table' END AS kind,
       pg_total_relation_size(c.oid)                     AS total_bytes,
       pg_size_pretty(pg_total_relation_size(c.oid))     AS total_size,
       s.n_live_tup                                      AS live_rows,
       s.n_dead_tup                                      AS dead_rows,
       s.last_autovacuum
FROM object AS o
JOIN pg_class AS c ON c.oid = to_regclass(o.object_name)
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
ORDER BY total_bytes DESC;
