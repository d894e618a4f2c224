"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: 07746c5522a5
Revises: 26996c0dfbcd
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "07746c5522a5"
down_revision = "26996c0dfbcd"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
