"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: a4f870ea3ad0
Revises: 6bf034a54135
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "a4f870ea3ad0"
down_revision = "6bf034a54135"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
