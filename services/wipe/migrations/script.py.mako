"""${message}

Revision ID: ${up_revision}
Revises:${" " if down_revision else ""}${down_revision | comma,n}
Create Date: ${create_date}
"""
import sqlalchemy as sa
from alembic import op
% if not down_revision:
from services.kernel.migrations import (
    add_idempotency_made,
    create_idempotency_keys,
    create_outbox_and_inbox,
    drop_idempotency_keys,
    drop_idempotency_made,
    drop_outbox_and_inbox,
)
% endif
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
% if not down_revision:
    create_outbox_and_inbox()
    create_idempotency_keys()
    add_idempotency_made()
% endif
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
% if not down_revision:
    drop_idempotency_made()
    drop_idempotency_keys()
    drop_outbox_and_inbox()
% endif
