"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: e5e5193c00a2
Revises: 7c1e5a9b3d20
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "e5e5193c00a2"
down_revision = "7c1e5a9b3d20"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
