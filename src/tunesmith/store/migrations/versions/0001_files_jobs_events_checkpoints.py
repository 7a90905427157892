"""files, jobs, events, checkpoints

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("filename", sa.String(512), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, index=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("project", sa.String(128), nullable=False, index=True),
        sa.Column("model", sa.String(512), nullable=False),
        sa.Column("base_spec", sa.Text(), nullable=False),
        sa.Column("training_file", sa.String(64), nullable=False),
        sa.Column("validation_file", sa.String(64), nullable=True),
        sa.Column("method", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("suffix", sa.String(64), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("fine_tuned_model", sa.String(512), nullable=True, index=True),
        sa.Column("trained_tokens", sa.BigInteger(), nullable=True),
        sa.Column("result_files", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_event_step", sa.Integer(), nullable=False),
        sa.Column("pause_requested", sa.Boolean(), nullable=False),
        sa.Column("run_dir", sa.Text(), nullable=True),
    )
    op.create_index("jobs_queue", "jobs", ["status", "seq"])
    for name in ("events", "checkpoints"):
        columns = [
            sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
            sa.Column("id", sa.String(64), nullable=False, unique=True),
            sa.Column("job_id", sa.String(64), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
            sa.Column("created_at", sa.BigInteger(), nullable=False),
        ]
        if name == "events":
            columns += [sa.Column("level", sa.String(16), nullable=False), sa.Column("message", sa.Text(), nullable=False),
                        sa.Column("type", sa.String(16), nullable=False), sa.Column("data", sa.JSON(), nullable=True)]
        else:
            columns += [sa.Column("step_number", sa.Integer(), nullable=False),
                        sa.Column("fine_tuned_model_checkpoint", sa.String(600), nullable=False),
                        sa.Column("metrics", sa.JSON(), nullable=False)]
        op.create_table(name, *columns)


def downgrade() -> None:
    for name in ("checkpoints", "events", "jobs", "files"):
        op.drop_table(name)
