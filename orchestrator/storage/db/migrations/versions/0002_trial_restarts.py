"""Trial ledger: how often Ray restarted a trial, and the micro-batch it trained with after an out-of-memory retry.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hpo_trials") as table:
        table.add_column(sa.Column("restarts", sa.Integer, nullable=False, server_default="0"))
        table.add_column(sa.Column("micro_batch_size", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hpo_trials") as table:
        table.drop_column("micro_batch_size")
        table.drop_column("restarts")
