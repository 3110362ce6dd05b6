"""Every service's migrations build exactly the schema its models describe."""
import importlib
import os

import pytest

from services.kit.migrations import SERVICES_DIR, differences, has_migrations

SERVICES = sorted(name for name in os.listdir(SERVICES_DIR) if has_migrations(name))


@pytest.mark.skipif(not SERVICES, reason="no service has migrations yet")
@pytest.mark.parametrize("service_name", SERVICES)
def test_models_and_migrations_agree(service_name, database_backend, make_service_database):
    url = make_service_database(service_name, database_backend)
    models = importlib.import_module(f"services.{service_name}.models")
    assert differences(url, models.Base.metadata) == []
