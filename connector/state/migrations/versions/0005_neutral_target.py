"""Neutral target columns: `noko_invoice_id`, `noko_url`, `noko_state`, `noko_lines` become
`target_id`, `target_link`, `target_state`, `target_lines` (values kept as they are); the index on
the id follows it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_RENAMES = (
    ("noko_invoice_id", "target_id"),
    ("noko_url", "target_link"),
    ("noko_state", "target_state"),
    ("noko_lines", "target_lines"),
)


def upgrade() -> None:
    op.drop_index("ix_invoices_noko_invoice_id", "invoices")
    with op.batch_alter_table("invoices") as batch:
        for old, new in _RENAMES:
            batch.alter_column(old, new_column_name=new)
    op.create_index("ix_invoices_target_id", "invoices", ["target_id"])


def downgrade() -> None:
    op.drop_index("ix_invoices_target_id", "invoices")
    with op.batch_alter_table("invoices") as batch:
        for old, new in _RENAMES:
            batch.alter_column(new, new_column_name=old)
    op.create_index("ix_invoices_noko_invoice_id", "invoices", ["noko_invoice_id"])
