"""initial schema

Revision ID: cc279b1bb86d
Revises: (none: the first revision)
Create Date: 2026-11-26 21:47:28.202471

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = 'cc279b1bb86d'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('enrollments_per_course',
    sa.Column('course_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('course_title', sa.String(length=300), nullable=True),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('course_id')
    )
    op.create_table('event_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=255), nullable=False),
    sa.Column('routing_key', sa.String(length=255), nullable=False),
    sa.Column('source', sa.Text(), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('timestamp', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('user_id', sa.BigInteger(), nullable=True),
    sa.Column('course_id', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id')
    )
    with op.batch_alter_table('event_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_log_course_id'), ['course_id'], unique=False)
        batch_op.create_index('ix_event_log_event_type_timestamp', ['event_type', 'timestamp'], unique=False)
        batch_op.create_index('ix_event_log_timestamp_id', ['timestamp', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_event_log_user_id'), ['user_id'], unique=False)

    op.create_table('event_type_counts',
    sa.Column('event_type', sa.String(length=255), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('event_type')
    )
    op.create_table('events_per_minute',
    sa.Column('minute', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_type', sa.String(length=255), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('minute', 'event_type')
    )
    op.create_table('inbox_records',
    sa.Column('consumer', sa.String(length=255), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=255), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('consumer', 'event_id')
    )
    op.create_table('rating_counts',
    sa.Column('rating', sa.SmallInteger(), autoincrement=False, nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('rating')
    )
    op.create_table('registrations_per_day',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('day')
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('registrations_per_day')
    op.drop_table('rating_counts')
    op.drop_table('inbox_records')
    op.drop_table('events_per_minute')
    op.drop_table('event_type_counts')
    with op.batch_alter_table('event_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_log_user_id'))
        batch_op.drop_index('ix_event_log_timestamp_id')
        batch_op.drop_index('ix_event_log_event_type_timestamp')
        batch_op.drop_index(batch_op.f('ix_event_log_course_id'))

    op.drop_table('event_log')
    op.drop_table('enrollments_per_course')
