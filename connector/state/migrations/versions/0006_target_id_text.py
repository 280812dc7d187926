"""Target ids are text: an accounting system's invoice id may be any string (Xero's are
UUIDs). Noko's integer ids become their decimal strings ("123"); the index on the column
follows it (SQLite rebuilds the table; the copy casts each value, and a column of
text affinity stores an integer as its text).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices", recreate="always") as batch:
        batch.alter_column(
            "target_id", existing_type=sa.Integer(), type_=sa.String(), existing_nullable=True
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices", recreate="always") as batch:
        batch.alter_column(
            "target_id", existing_type=sa.String(), type_=sa.Integer(), existing_nullable=True
        )
