"""Lifecycle: Kantata status and project of each invoice, payments recorded, Noko id index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.add_column(sa.Column("kantata_status", sa.String(), nullable=True))
        batch.add_column(sa.Column("workspace_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("payment_recorded_at", sa.DateTime(), nullable=True))
    op.create_index("ix_invoices_noko_invoice_id", "invoices", ["noko_invoice_id"])


def downgrade() -> None:
    op.drop_index("ix_invoices_noko_invoice_id", "invoices")
    with op.batch_alter_table("invoices") as batch:
        batch.drop_column("payment_recorded_at")
        batch.drop_column("workspace_id")
        batch.drop_column("kantata_status")
