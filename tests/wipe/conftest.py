from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request):  # noqa: ANN001, ANN201
    """The embedded (SQLite) and the distributed (PostgreSQL) database."""
    return request.getfixturevalue("sqlite_settings" if request.param == "sqlite" else "pg_settings")
