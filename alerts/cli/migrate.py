"""`alerts migrate`: applies the database migrations."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from alerts.cli.clients import CommandError, require_database_url, run_database_job
from mesh.logging import configure_logging

log = logging.getLogger("alerts")


def register(commands: Any) -> None:
    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=migrate)


def migrate(options: argparse.Namespace) -> int:
    from signal_service.migrate import upgrade
    from signal_service.parsing import IndicatorCatalogError, load_indicator_catalog
    from signal_service.settings import DatabaseJobSettings

    configure_logging("migrate")
    settings = DatabaseJobSettings()
    database_url = require_database_url(settings.database_url)
    # Migrations read the catalog; a broken one stops here, before any of them runs.
    try:
        load_indicator_catalog(settings.indicators_path)
    except IndicatorCatalogError as error:
        raise CommandError(str(error)) from None
    run_database_job(database_url, lambda: upgrade(database_url, indicators_path=settings.indicators_path))
    log.info("migrations applied")
    return 0
