"""idempotency keys: a retried request whose work committed gets its original reply

Revision ID: adc7e41c689c
Revises: c54a34a382cf
Create Date: 2026-12-04 19:10:00.000000
"""

from services.kernel.migrations import create_idempotency_keys, drop_idempotency_keys

revision = "adc7e41c689c"
down_revision = "c54a34a382cf"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_idempotency_keys()


def downgrade() -> None:
    drop_idempotency_keys()
