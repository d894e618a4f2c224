"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: 748fbf21c3b6
Revises: 07746c5522a5
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "748fbf21c3b6"
down_revision = "07746c5522a5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
