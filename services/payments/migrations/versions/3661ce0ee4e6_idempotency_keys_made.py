"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: 3661ce0ee4e6
Revises: c1e3b1cb9d7e
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "3661ce0ee4e6"
down_revision = "c1e3b1cb9d7e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
