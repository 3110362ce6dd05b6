from services.kit.migrations import run_migrations
from services.analytics.models import Base

run_migrations(Base.metadata)
