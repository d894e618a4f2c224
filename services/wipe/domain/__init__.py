"""Wipe domain: reports, the policy by media, signatures, certificates (no I/O)."""
