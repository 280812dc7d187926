"""Operations: updates and conflicts of each run counted apart; the webhook's notified state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("updated", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("conflicts", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "notifications",
        sa.Column("kantata_id", sa.String(), primary_key=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("notified_at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notifications")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("conflicts")
        batch.drop_column("updated")
