"""The database: sessions (database.DatabaseTarget.connect, with the run's limits and time limit),
the errors that end a run, and what of a database error may be shown or retried."""
