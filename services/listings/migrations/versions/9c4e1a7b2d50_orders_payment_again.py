"""orders: payment_attempt, payment_failure_reason, payment_failed_at (a shipped order whose authorisation was let
go before its escrow capture asks the buyer to pay again)

Revision ID: 9c4e1a7b2d50
Revises: f2700b86c221
Create Date: 2026-12-07 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "9c4e1a7b2d50"
down_revision = "f2700b86c221"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("payment_attempt", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("payment_failure_reason", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("payment_failed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_orders_status_payment_failed", ["status", "payment_failed_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_status_payment_failed")
        batch_op.drop_column("payment_failed_at")
        batch_op.drop_column("payment_failure_reason")
        batch_op.drop_column("payment_attempt")
