"""feedback: the fingerprint of the key that gave it

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # rows written before this migration keep NULL: which key gave them was never recorded
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("key_fingerprint", sa.String(16), nullable=True))
    op.create_index("feedback_key_time", "feedback", ["key_fingerprint", "created_at"])


def downgrade() -> None:
    op.drop_index("feedback_key_time", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("key_fingerprint")
