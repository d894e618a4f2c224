"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: c1e3b1cb9d7e
Revises: d7e2b9c4a1f0
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "c1e3b1cb9d7e"
down_revision = "d7e2b9c4a1f0"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
