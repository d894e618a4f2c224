"""Pricing routes (quotes, indices, methodology, observations)."""
from __future__ import annotations

from services.kernel.http import Router

router = Router("pricing")
