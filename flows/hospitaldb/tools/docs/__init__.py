"""Offline and deploy-time tools: docs/ draws the docs' regions from the code and ships the site."""
