"""First release: invoices, their history, cursors and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("kantata_id", sa.String(), primary_key=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("stage", sa.String(), nullable=False, server_default=""),
        sa.Column("reference", sa.String(), nullable=True),
        sa.Column("fingerprint", sa.String(), nullable=True),
        sa.Column("source_fingerprint", sa.String(), nullable=True),
        sa.Column("noko_invoice_id", sa.Integer(), nullable=True),
        sa.Column("noko_url", sa.String(), nullable=True),
        sa.Column("noko_state", sa.String(), nullable=True),
        sa.Column("noko_lines", sa.String(), nullable=True),
        sa.Column("currency", sa.String(), nullable=True),
        sa.Column("exponent", sa.Integer(), nullable=True),
        sa.Column("total_minor", sa.BigInteger(), nullable=True),
        sa.Column("balance_in_cents", sa.BigInteger(), nullable=True),
        sa.Column("kantata_updated_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("error_kind", sa.String(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("skip_reason", sa.String(), nullable=True),
        sa.Column("writeback_hash", sa.String(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("synced_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_invoices_status", "invoices", ["status"])
    op.create_table(
        "invoice_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("kantata_id", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False, server_default=""),
    )
    op.create_index("ix_invoice_events_kantata_id", "invoice_events", ["kantata_id"])
    op.create_table(
        "cursors",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("value", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pushed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("unchanged", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("pages", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cursor_before", sa.DateTime(), nullable=True),
        sa.Column("cursor_after", sa.DateTime(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
    )
    op.create_index("ix_runs_run_id", "runs", ["run_id"], unique=True)


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("cursors")
    op.drop_index("ix_invoice_events_kantata_id", "invoice_events")
    op.drop_table("invoice_events")
    op.drop_index("ix_invoices_status", "invoices")
    op.drop_table("invoices")
