"""The SQL of the steps, parsed once per run (script.SqlFiles) and read for what it does: what a
step refreshes and names (analysis), what no step may run (forbidden), what each object reads (lineage)."""
