"""orders: ship_by (a paid order not shipped by then is cancelled and its hold released)

Revision ID: 5b8d2f7c3a91
Revises: adc7e41c689c
Create Date: 2026-12-06 10:00:00.000000
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

revision = "5b8d2f7c3a91"
down_revision = "adc7e41c689c"
branch_labels = None
depends_on = None

# orders paid before this revision get the default deadline (LISTINGS_SHIP_DAYS) from their payment
SHIP_DAYS = 3


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ship_by", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_orders_status_ship_by", ["status", "ship_by"], unique=False)
    orders = sa.table(
        "orders",
        sa.column("id", sa.String),
        sa.column("status", sa.String),
        sa.column("paid_at", sa.DateTime(timezone=True)),
        sa.column("ship_by", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    paid = bind.execute(sa.select(orders.c.id, orders.c.paid_at).where(orders.c.status == "paid")).all()
    for row in paid:
        bind.execute(
            orders.update()
            .where(orders.c.id == row.id)
            .values(ship_by=row.paid_at + timedelta(days=SHIP_DAYS))
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_status_ship_by")
        batch_op.drop_column("ship_by")
