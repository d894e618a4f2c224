"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: a1137003d707
Revises: 0264c212621d
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "a1137003d707"
down_revision = "0264c212621d"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
