"""ledger invariants in the database: (kind, ref) unique; an entry's lines balance; posted entries append-only

The application checks both before it writes (domain/ledger.py); the database now refuses any writer that does
not — a bug, a script, a hand-written fix. An entry is written lines first, then its header row: inserting the
header checks that its lines exist (two or more) and sum to zero, and lines can no longer be added to or changed
in a posted entry. The lines' foreign key to the header is checked at commit (deferred) to allow that order.

Revision ID: c3a1e5d7f902
Revises: ff4a8a2d3174
Create Date: 2026-12-04 17:10:00
"""

from alembic import op

revision = "c3a1e5d7f902"
down_revision = "ff4a8a2d3174"
branch_labels = None
depends_on = None

FK = "fk_ledger_lines_entry_id_ledger_entries"

SQLITE = [
    """CREATE TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_entries
       WHEN (SELECT count(*) FROM ledger_lines WHERE entry_id = NEW.id) < 2
         OR (SELECT coalesce(sum(amount_fen), 0) FROM ledger_lines WHERE entry_id = NEW.id) <> 0
       BEGIN SELECT RAISE(ABORT, 'ledger entry is not balanced (its lines must be two or more and sum to 0)'); END""",
    """CREATE TRIGGER ledger_lines_append_only BEFORE INSERT ON ledger_lines
       WHEN EXISTS (SELECT 1 FROM ledger_entries WHERE id = NEW.entry_id)
       BEGIN SELECT RAISE(ABORT, 'ledger entry already posted: append a new entry instead'); END""",
    """CREATE TRIGGER ledger_lines_unchanged BEFORE UPDATE OF entry_id, account, amount_fen ON ledger_lines
       BEGIN SELECT RAISE(ABORT, 'ledger lines are append-only: post a reversing entry'); END""",
]

POSTGRES = [
    """CREATE FUNCTION ledger_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF (SELECT count(*) FROM ledger_lines WHERE entry_id = NEW.id) < 2
            OR (SELECT coalesce(sum(amount_fen), 0) FROM ledger_lines WHERE entry_id = NEW.id) <> 0 THEN
           RAISE EXCEPTION 'ledger entry % is not balanced (its lines must be two or more and sum to 0)', NEW.id
             USING ERRCODE = 'check_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_entries
       FOR EACH ROW EXECUTE FUNCTION ledger_entry_balanced()""",
    """CREATE FUNCTION ledger_lines_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'UPDATE' OR EXISTS (SELECT 1 FROM ledger_entries WHERE id = NEW.entry_id) THEN
           RAISE EXCEPTION 'ledger lines are append-only: post a reversing entry' USING ERRCODE = 'check_violation';
         END IF;
         RETURN NEW;
       END $$""",
    """CREATE TRIGGER ledger_lines_append_only BEFORE INSERT OR UPDATE OF entry_id, account, amount_fen
       ON ledger_lines FOR EACH ROW EXECUTE FUNCTION ledger_lines_append_only()""",
]


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.create_index("uq_ledger_entries_kind_ref", ["kind", "ref"], unique=True)
    with op.batch_alter_table("ledger_lines", recreate="always") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(
            FK, "ledger_entries", ["entry_id"], ["id"], deferrable=True, initially="DEFERRED"
        )
    for ddl in POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(ddl)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_lines_append_only ON ledger_lines")
        op.execute("DROP TRIGGER ledger_entry_balanced ON ledger_entries")
        op.execute("DROP FUNCTION ledger_lines_append_only()")
        op.execute("DROP FUNCTION ledger_entry_balanced()")
    else:
        for name in ("ledger_entry_balanced", "ledger_lines_append_only", "ledger_lines_unchanged"):
            op.execute(f"DROP TRIGGER {name}")
    with op.batch_alter_table("ledger_lines", recreate="always") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.create_foreign_key(FK, "ledger_entries", ["entry_id"], ["id"])
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_index("uq_ledger_entries_kind_ref")
