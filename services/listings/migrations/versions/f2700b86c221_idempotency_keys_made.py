"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: f2700b86c221
Revises: 5b8d2f7c3a91
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "f2700b86c221"
down_revision = "5b8d2f7c3a91"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
