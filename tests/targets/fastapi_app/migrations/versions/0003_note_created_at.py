"""note.created_at and an index on note.owner_id (the release's migration)"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade():
    op.add_column("note", sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                                    nullable=False))
    op.create_index("ix_note_owner_id", "note", ["owner_id"])


def downgrade():
    op.drop_index("ix_note_owner_id", table_name="note")
    op.drop_column("note", "created_at")
