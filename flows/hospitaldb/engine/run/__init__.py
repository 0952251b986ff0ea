"""The plans, decided before anything is written (plans.plan_steps, view_groups), and running them:
a step in one transaction (runner), its views side by side (parallel), a dry run, the refresh lock, upkeep."""
