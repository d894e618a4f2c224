"""buyer default and second-chance offers

Revision ID: 6bf034a54135
Revises: ca4bf20590e1
Create Date: 2026-12-04 19:52:15.701151
"""

import sqlalchemy as sa
from alembic import op

revision = "6bf034a54135"
down_revision = "ca4bf20590e1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deposits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("forfeit_fee_fen", sa.BigInteger(), nullable=True))

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("returned_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("trades", schema=None) as batch_op:
        # the trades so far are each their lot's first round
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default=sa.text("1")))
        batch_op.add_column(sa.Column("payment_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("defaulted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("default_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("default_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("deposit_forfeited_fen", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("offered_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("offer_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("offer_ended_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.drop_constraint(batch_op.f("uq_trades_lot_id"), type_="unique")
        batch_op.create_index("ix_trades_status", ["status"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_trades_lot_id_round"), ["lot_id", "round"])


def downgrade() -> None:
    with op.batch_alter_table("trades", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_trades_lot_id_round"), type_="unique")
        batch_op.drop_index("ix_trades_status")
        batch_op.create_unique_constraint(batch_op.f("uq_trades_lot_id"), ["lot_id"])
        batch_op.drop_column("offer_ended_at")
        batch_op.drop_column("offer_expires_at")
        batch_op.drop_column("offered_at")
        batch_op.drop_column("deposit_forfeited_fen")
        batch_op.drop_column("default_note")
        batch_op.drop_column("default_reason")
        batch_op.drop_column("defaulted_at")
        batch_op.drop_column("payment_requested_at")
        batch_op.drop_column("round")

    with op.batch_alter_table("lots", schema=None) as batch_op:
        batch_op.drop_column("returned_at")

    with op.batch_alter_table("deposits", schema=None) as batch_op:
        batch_op.drop_column("forfeit_fee_fen")
