"""Fix 10: the ledger's invariants hold in the database itself (SQLite and PostgreSQL): an entry whose lines do
not balance, a second entry for the same (kind, ref), or a change to a posted entry's lines is refused, whoever
writes it (here: raw SQL, past every check of the application)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.kernel.platform import Platform


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def payments_db(request, sqlite_settings):  # noqa: ANN001, ANN201
    settings = sqlite_settings if request.param == "sqlite" else request.getfixturevalue("pg_settings")
    platform = Platform(settings, services=["payments"]).prepare()
    yield platform["payments"].db
    platform.stop()


def _post(db, entry_id: str, kind: str, ref: str, amounts: list[int]) -> None:  # noqa: ANN001
    with db.engine.begin() as c:
        for i, a in enumerate(amounts):
            c.execute(
                text("INSERT INTO ledger_lines (entry_id, account, amount_fen) VALUES (:e, :a, :n)"),
                {"e": entry_id, "a": f"test:acct{i}", "n": a},
            )
        c.execute(
            text(
                "INSERT INTO ledger_entries (id, kind, ref, memo, created_at) "
                "VALUES (:e, :k, :r, '', CURRENT_TIMESTAMP)"
            ),
            {"e": entry_id, "k": kind, "r": ref},
        )


def _lines(db, entry_id: str) -> int:  # noqa: ANN001
    with db.engine.connect() as c:
        return c.execute(
            text("SELECT count(*) FROM ledger_lines WHERE entry_id = :e"), {"e": entry_id}
        ).scalar()


def test_the_database_refuses_what_would_break_the_ledger(payments_db):
    _post(payments_db, "le_ok", "test", "ref-1", [500, -500])  # balanced: accepted
    with pytest.raises(DBAPIError, match="not balanced"):
        _post(payments_db, "le_bad", "test", "ref-2", [500, -499])
    with pytest.raises(DBAPIError, match="not balanced"):  # a header without lines
        _post(payments_db, "le_empty", "test", "ref-3", [])
    with pytest.raises(DBAPIError):  # the same fact booked twice
        _post(payments_db, "le_twice", "test", "ref-1", [100, -100])
    with (
        pytest.raises(DBAPIError, match="append"),
        payments_db.engine.begin() as c,
    ):  # a line into a posted entry
        c.execute(text("INSERT INTO ledger_lines (entry_id, account, amount_fen) VALUES ('le_ok', 'x', 1)"))
    with pytest.raises(DBAPIError, match="append-only"), payments_db.engine.begin() as c:
        c.execute(
            text("UPDATE ledger_lines SET amount_fen = 499 WHERE entry_id = 'le_ok' AND amount_fen = 500")
        )
    assert [_lines(payments_db, e) for e in ("le_ok", "le_bad", "le_empty", "le_twice")] == [2, 0, 0, 0]
