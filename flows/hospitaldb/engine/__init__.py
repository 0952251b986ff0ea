"""The engine: steps, their SQL parsed and analysed, plans, the runner, checks, the lock, connections, errors."""
