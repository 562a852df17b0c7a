"""The indicator catalog: the shipped default, custom files, and adding an indicator by config alone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from signal_service.parsing import (
    DEFAULT_CATALOG_PATH,
    IndicatorCatalogError,
    ParseStatus,
    load_indicator_catalog,
    parse_alert,
)

RECEIVED_AT = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)

NEW_INDICATOR_TOML = """
[generic]
signal_types = ["Buy", "Sell"]

[[indicators]]
name = "Volume Hunter [ACME]"
aliases = ["Volume Hunter", "VHunter"]
signal_types = ["Pico de Volumen", "Volumen Seco"]
[indicators.labels]
"Volumen Relativo" = "relative_volume"
"Sentido" = "signal_type"
"""

NEW_INDICATOR_MESSAGE = """🚨 VHunter
📊 Sentido: Pico de Volumen
🪙 Ticker: BINANCE:BTCUSDT
💰 Precio: 67,890.50
🔊 Volumen Relativo: 3.4x
"""


def test_shipped_catalog_loads_with_the_apidevs_indicators() -> None:
    catalog = load_indicator_catalog()
    assert DEFAULT_CATALOG_PATH.is_file()
    names = {spec.name for spec in catalog.indicators}
    assert "ADX DEF [APIDEVS]" in names
    assert len(catalog) >= 3
    assert load_indicator_catalog(DEFAULT_CATALOG_PATH).indicators == catalog.indicators


def test_new_indicator_is_a_config_change_only(tmp_path: Path) -> None:
    default_result = parse_alert(NEW_INDICATOR_MESSAGE.encode(), received_at=RECEIVED_AT)
    assert (default_result.indicator, default_result.indicator_key) == ("VHunter", None)
    assert "indicator_unknown" in default_result.problems
    assert default_result.signal_type is None
    assert default_result.extra["Sentido"] == "Pico de Volumen"

    config = tmp_path / "indicators.toml"
    config.write_text(NEW_INDICATOR_TOML, encoding="utf-8")
    catalog = load_indicator_catalog(config)
    result = parse_alert(NEW_INDICATOR_MESSAGE.encode(), received_at=RECEIVED_AT, catalog=catalog)

    assert result.status is ParseStatus.COMPLETE
    assert (result.indicator, result.indicator_key) == ("VHunter", "Volume Hunter [ACME]")
    assert result.signal_type == "Pico de Volumen"
    assert result.extra == {"relative_volume": "3.4x"}
    assert result.problems == ()


def test_new_indicator_signal_types_are_recognised_in_free_text(tmp_path: Path) -> None:
    config = tmp_path / "indicators.toml"
    config.write_text(NEW_INDICATOR_TOML, encoding="utf-8")
    catalog = load_indicator_catalog(config)
    body = b"Volume Hunter: volumen seco en BINANCE:SOLUSDT a 145.2"

    result = parse_alert(body, received_at=RECEIVED_AT, catalog=catalog)

    assert (result.indicator, result.indicator_key) == ("Volume Hunter", "Volume Hunter [ACME]")
    assert result.signal_type == "volumen seco"
    assert result.ticker == "BINANCE:SOLUSDT"
    assert str(result.price) == "145.2"
    assert result.status is ParseStatus.COMPLETE


def test_catalog_may_be_yaml(tmp_path: Path) -> None:
    config = tmp_path / "indicators.yaml"
    config.write_text(
        "indicators:\n"
        "  - name: Trend Ribbon [ACME]\n"
        "    aliases: [Trend Ribbon]\n"
        "    signal_types: [Ribbon Flip Up]\n"
        "    labels: {Fuerza: strength}\n",
        encoding="utf-8",
    )
    catalog = load_indicator_catalog(config)
    body = "Trend Ribbon\nSeñal: Ribbon Flip Up\nTicker: BINANCE:BTCUSDT\nPrecio: 1\nFuerza: 9".encode()

    result = parse_alert(body, received_at=RECEIVED_AT, catalog=catalog)

    assert (result.indicator, result.indicator_key) == ("Trend Ribbon", "Trend Ribbon [ACME]")
    assert result.extra == {"strength": "9"}
    assert result.problems == ()


def test_indicator_labels_apply_only_to_their_indicator() -> None:
    rsi = b"RSI PRO+ [APIDEVS]\nZona: Sobreventa\nTicker: BINANCE:BTCUSDT\nPrecio: 1"
    smz = b"Smart Money Zones [APIDEVS]\nZona: Sobreventa\nTicker: BINANCE:BTCUSDT\nPrecio: 1"

    assert parse_alert(rsi, received_at=RECEIVED_AT).signal_type == "Sobreventa"
    smz_result = parse_alert(smz, received_at=RECEIVED_AT)
    assert smz_result.signal_type is None
    assert smz_result.extra == {"zone": "Sobreventa"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[indicators]]\naliases = ['x']\n", "name must be a non-empty string"),
        ("[[indicators]]\nname = 'A'\n[[indicators]]\nname = 'a'\n", "repeated"),
        ("[[indicators]]\nname = 'A'\ncolour = 'red'\n", "unknown keys"),
        ("[[indicators]]\nname = 'A'\nsignal_types = 'Buy'\n", "list of non-empty strings"),
        ("[[indicators]]\nname = 'A'\nlabels = ['x']\n", "table of label = target"),
        ("indicators = 3\n", "array of tables"),
        ("this is = = not toml", "not valid"),
    ],
)
def test_malformed_catalog_is_refused_at_load(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "indicators.toml"
    config.write_text(content, encoding="utf-8")
    with pytest.raises(IndicatorCatalogError, match=message):
        load_indicator_catalog(config)


def test_missing_catalog_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IndicatorCatalogError, match="cannot read"):
        load_indicator_catalog(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("written", "other_indicator"),
    [
        ("RSI PRO [APIDEVS]", "RSI PRO+ [APIDEVS]"),
        ("RSI PRO", "RSI PRO+ [APIDEVS]"),
        ("SQUEEZE MOMENTUM [APIDEVS]", "Squeeze Momentum DEF [APIDEVS]"),
        ("Squeeze Momentum", "Squeeze Momentum DEF [APIDEVS]"),
    ],
)
def test_a_similar_name_is_not_an_alias_of_another_indicator(written: str, other_indicator: str) -> None:
    catalog = load_indicator_catalog()
    assert catalog.indicator_named(written) is None
    assert catalog.indicator_mentioned_in(f"{written} Sobreventa en BINANCE:BTCUSDT") is None

    result = parse_alert(
        f"{written}\nSeñal: Sobreventa\nTicker: BINANCE:BTCUSDT".encode(), received_at=RECEIVED_AT
    )

    assert (result.indicator, result.indicator_key) == (written, None)
    assert "indicator_unknown" in result.problems
    assert other_indicator in {spec.name for spec in catalog.indicators}


@pytest.mark.parametrize(
    "written",
    ["RSI PRO+", "rsi pro+ [apidevs]", "RSI  PRO+   [APIDEVS]", "Rsi Pro Plus"],
)
def test_spellings_of_the_same_indicator_share_its_key(written: str) -> None:
    result = parse_alert(
        f"🚨 {written} 🚨\nSeñal: Sobreventa\nTicker: BINANCE:BTCUSDT\nPrecio: 1".encode(),
        received_at=RECEIVED_AT,
    )

    assert result.indicator == " ".join(written.split())
    assert result.indicator_key == "RSI PRO+ [APIDEVS]"
    assert result.problems == ()


def test_indicator_labels_may_name_the_bar_time_and_the_firing(tmp_path: Path) -> None:
    config = tmp_path / "indicators.toml"
    config.write_text(
        '[[indicators]]\nname = "Volume Hunter [ACME]"\n'
        '[indicators.labels]\n"Vela" = "bar_time"\n"Disparo" = "fired_at"\n',
        encoding="utf-8",
    )
    catalog = load_indicator_catalog(config)
    body = (
        "Volume Hunter [ACME]\nSeñal: Buy\nTicker: BINANCE:BTCUSDT\nPrecio: 1\n"
        "Disparo: 2026-11-27T14:31:00Z\nVela: 2026-11-27T14:15:00Z"
    ).encode()

    result = parse_alert(body, received_at=RECEIVED_AT, catalog=catalog)

    assert result.bar_time == datetime(2026, 11, 27, 14, 15, tzinfo=UTC)
    assert result.fired_at == datetime(2026, 11, 27, 14, 31, tzinfo=UTC)
    assert result.alert_time == result.fired_at
    assert result.extra == {}


def test_a_catalog_without_indicators_is_used_as_it_is(tmp_path: Path) -> None:
    config = tmp_path / "indicators.toml"
    config.write_text('[generic]\nsignal_types = ["Buy"]\n', encoding="utf-8")
    catalog = load_indicator_catalog(config)
    assert len(catalog) == 0

    result = parse_alert(
        b"ADX DEF [APIDEVS]\nSignal: Buy\nTicker: BINANCE:BTCUSDT\nPrice: 1",
        received_at=RECEIVED_AT,
        catalog=catalog,
    )

    assert (result.indicator, result.indicator_key) == ("ADX DEF [APIDEVS]", None)
    assert "indicator_unknown" in result.problems
