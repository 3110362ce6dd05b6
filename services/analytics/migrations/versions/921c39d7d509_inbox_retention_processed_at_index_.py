"""inbox retention: processed_at index, inbox_horizons

Revision ID: 921c39d7d509
Revises: cc279b1bb86d
Create Date: 2026-12-01 09:04:35.742476

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '921c39d7d509'
down_revision: Union[str, Sequence[str], None] = 'cc279b1bb86d'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('inbox_horizons',
    sa.Column('consumer', sa.String(length=255), nullable=False),
    sa.Column('pruned_before', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer')
    )
    with op.batch_alter_table('inbox_records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_inbox_records_processed_at'), ['processed_at'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('inbox_records', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_inbox_records_processed_at'))

    op.drop_table('inbox_horizons')
