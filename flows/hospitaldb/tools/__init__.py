"""Offline tools a worker never imports: validation, the least-privilege roles, the server guard, the image."""
