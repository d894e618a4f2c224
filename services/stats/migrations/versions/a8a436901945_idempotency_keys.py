"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: a8a436901945
Revises: 201ef974254f
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "a8a436901945"
down_revision = "201ef974254f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
