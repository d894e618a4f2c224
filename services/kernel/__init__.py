"""Shared kernel: settings, database/unit of work, event envelope, bus adapters, outbox/inbox, money, ids, errors.

Keep it small: domain code belongs to its service.
"""
