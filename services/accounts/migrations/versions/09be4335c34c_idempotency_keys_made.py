"""idempotency keys: made (a reply lost after the commit is rebuilt from what the request made)

Revision ID: 09be4335c34c
Revises: 461b945b2ddd
Create Date: 2026-12-06 10:00:00.000000
"""

from services.kernel.migrations import add_idempotency_made, drop_idempotency_made

revision = "09be4335c34c"
down_revision = "461b945b2ddd"
branch_labels = None
depends_on = None


def upgrade() -> None:
    add_idempotency_made()


def downgrade() -> None:
    drop_idempotency_made()
