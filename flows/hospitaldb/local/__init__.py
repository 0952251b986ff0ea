"""Local commands: `python flows/refresh.py` and the embedded demo database."""
