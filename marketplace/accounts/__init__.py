"""Organisations, users, roles and API tokens."""
