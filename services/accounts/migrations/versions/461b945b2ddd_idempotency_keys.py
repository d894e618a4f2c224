"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: 461b945b2ddd
Revises: 6a1c5780b022
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "461b945b2ddd"
down_revision = "6a1c5780b022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
