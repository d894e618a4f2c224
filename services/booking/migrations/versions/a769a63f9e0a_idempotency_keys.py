"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: a769a63f9e0a
Revises: 069a68a4f05e
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "a769a63f9e0a"
down_revision = "069a68a4f05e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
