"""exports: heartbeat_at (a running job whose worker died is sent again)

Revision ID: 7c1e5a9b3d20
Revises: e24adf6a6a00
Create Date: 2026-12-05 03:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "7c1e5a9b3d20"
down_revision = "e24adf6a6a00"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("exports", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
