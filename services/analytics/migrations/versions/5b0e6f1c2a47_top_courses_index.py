"""the summary's top courses read from an index (count, course_id)

Revision ID: 5b0e6f1c2a47
Revises: 921c39d7d509
Create Date: 2026-12-01 09:50:00

"""
from typing import Sequence, Union

from alembic import op


# revision identifiers, used by Alembic.
revision: str = '5b0e6f1c2a47'
down_revision: Union[str, Sequence[str], None] = '921c39d7d509'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index('ix_enrollments_per_course_top', 'enrollments_per_course',
                    ['count', 'course_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_enrollments_per_course_top', table_name='enrollments_per_course')
