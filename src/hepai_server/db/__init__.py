"""Durable facts: users, groups, API keys and usage, in SQLite or PostgreSQL."""
