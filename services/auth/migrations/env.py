from services.kit.migrations import run_migrations
from services.auth.models import Base

run_migrations(Base.metadata)
