"""The first version: sweeps, invocations, the trial ledger and study leases.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hpo_sweeps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(512), nullable=False, unique=True),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "hpo_invocations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("sweep_id", sa.Integer, sa.ForeignKey("hpo_sweeps.id"), nullable=False, index=True),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("mlflow_parent_run_id", sa.String(64)),
        sa.Column("exit_status", sa.String(32)),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "hpo_trials",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_name", sa.String(512), nullable=False, index=True),
        sa.Column("invocation_id", sa.String(36), sa.ForeignKey("hpo_invocations.id"), nullable=False, index=True),
        sa.Column("optuna_trial_id", sa.Integer, nullable=False),
        sa.Column("optuna_trial_number", sa.Integer, nullable=False),
        sa.Column("ray_trial_id", sa.String(64)),
        sa.Column("mlflow_run_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text),
        sa.Column("cpu", sa.Float, nullable=False),
        sa.Column("gpu", sa.Float, nullable=False),
        sa.Column("checkpoint_path", sa.Text),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.UniqueConstraint("study_name", "optuna_trial_number"),
    )
    op.create_table(
        "hpo_leases",
        sa.Column("study_name", sa.String(512), primary_key=True),
        sa.Column("holder", sa.String(36), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("hpo_leases", "hpo_trials", "hpo_invocations", "hpo_sweeps"):
        op.drop_table(table)
