"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: e24adf6a6a00
Revises: dde9fe03145d
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "e24adf6a6a00"
down_revision = "dde9fe03145d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
