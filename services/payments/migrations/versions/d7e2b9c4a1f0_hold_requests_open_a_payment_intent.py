"""hold requests open a PaymentIntent at the provider: its id, and the payer's last attempt already reported

Revision ID: d7e2b9c4a1f0
Revises: c3a1e5d7f902
Create Date: 2026-12-04 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "d7e2b9c4a1f0"
down_revision = "c3a1e5d7f902"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hold_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_ref", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("attempt_ref", sa.String(length=128), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_hold_requests_provider_ref"), ["provider_ref"])


def downgrade() -> None:
    with op.batch_alter_table("hold_requests", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_hold_requests_provider_ref"), type_="unique")
        batch_op.drop_column("attempt_ref")
        batch_op.drop_column("provider_ref")
