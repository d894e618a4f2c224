"""Bounded contexts. Each subpackage owns its tables and talks to the others only through events."""
