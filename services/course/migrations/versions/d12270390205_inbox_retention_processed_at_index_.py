"""inbox retention: processed_at index, inbox_horizons

Revision ID: d12270390205
Revises: 6be556d58acc
Create Date: 2026-12-01 09:04:33.583068

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'd12270390205'
down_revision: Union[str, Sequence[str], None] = '6be556d58acc'
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
