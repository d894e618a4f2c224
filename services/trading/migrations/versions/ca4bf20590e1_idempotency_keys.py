"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: ca4bf20590e1
Revises: 482f5c555940
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "ca4bf20590e1"
down_revision = "482f5c555940"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
