"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: 0264c212621d
Revises: 48e9563ff805
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "0264c212621d"
down_revision = "48e9563ff805"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
