"""The SQL of the steps, parsed once per run (script.SqlFiles) and read for what it does: what a
step refreshes and names (analysis), what the run's SQL may hold (allowed), what each object reads (lineage)."""
