"""`alerts migrate`: applies the Alembic migrations shipped with the signal service."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(database_url: str, indicators_path: Path | None = None) -> Config:
    """``indicators_path``: the deployment's indicator catalog (None: the shipped one), which migrations
    that derive indicator keys read."""
    config = Config(str(_INI))
    config.attributes["database_url"] = database_url
    config.attributes["indicators_path"] = indicators_path
    return config


def upgrade(database_url: str, revision: str = "head", *, indicators_path: Path | None = None) -> None:
    command.upgrade(alembic_config(database_url, indicators_path), revision)
