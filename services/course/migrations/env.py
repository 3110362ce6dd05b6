from services.kit.migrations import run_migrations
from services.course.models import Base

run_migrations(Base.metadata)
