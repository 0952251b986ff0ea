"""The engine, by job and in layers: db/ (sessions, errors), steps.py, sql/ (parsed SQL), checks/,
changes/ (change capture), run/ (plans and running them). It knows nothing of Prefect's runs or of who is told."""
