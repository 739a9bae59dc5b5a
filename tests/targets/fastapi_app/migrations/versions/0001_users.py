"""create app_user"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_table(
        "app_user",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    )
    op.create_index("ix_app_user_username", "app_user", ["username"], unique=True)


def downgrade():
    op.drop_index("ix_app_user_username", table_name="app_user")
    op.drop_table("app_user")
