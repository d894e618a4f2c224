"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: 6a02ca6397ca
Revises: a769a63f9e0a
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "6a02ca6397ca"
down_revision = "a769a63f9e0a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
