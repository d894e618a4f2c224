"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: 73cf455d4777
Revises: a8a436901945
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "73cf455d4777"
down_revision = "a8a436901945"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
