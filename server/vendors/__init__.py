"""Hosted-API-compatible surfaces: each vendor's fields, events and errors mapped onto
the same sessions (the routes are in server/api)."""
