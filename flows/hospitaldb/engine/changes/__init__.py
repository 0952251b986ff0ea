"""Change capture: which keys of the steps' sources changed since each step last took them (capture)."""
