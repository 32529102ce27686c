"""Durable rooms: the SQLite store behind realtime.core.records.Store."""
