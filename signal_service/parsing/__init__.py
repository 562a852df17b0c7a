"""Alert message parsing: TradingView webhook bodies in, a signal's fields out (pure code, no I/O).

catalog = load_indicator_catalog(settings_path_or_none)   # at startup
parsed = parse_alert(body, content_type=ct, query=query, received_at=now, catalog=catalog)
"""

from signal_service.parsing.catalog import (
    DEFAULT_CATALOG_PATH,
    IndicatorCatalog,
    IndicatorCatalogError,
    IndicatorSpec,
    indicator_catalog_from_mapping,
    load_indicator_catalog,
)
from signal_service.parsing.limits import MAX_PARSE_CHARS
from signal_service.parsing.model import ParsedAlert, ParseStatus
from signal_service.parsing.parser import parse_alert
from signal_service.parsing.render import format_price, render_standard_alert

__all__ = [
    "DEFAULT_CATALOG_PATH",
    "MAX_PARSE_CHARS",
    "IndicatorCatalog",
    "IndicatorCatalogError",
    "IndicatorSpec",
    "ParseStatus",
    "ParsedAlert",
    "format_price",
    "indicator_catalog_from_mapping",
    "load_indicator_catalog",
    "parse_alert",
    "render_standard_alert",
]
