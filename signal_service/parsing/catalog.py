"""The indicator catalog: which indicators exist, what they are called, what they emit.

The catalog is a TOML (or YAML) file, so adding an indicator is a configuration change. Shape::

    [generic]
    signal_types = ["Buy", "Sell", "Crossing Up"]   # recognised in free text for any message

    [labels]                                         # extra line labels for every message
    "Moneda" = "ticker"

    [[indicators]]
    name = "ADX DEF [APIDEVS]"                       # canonical name, stored on the signal
    aliases = ["ADX DEF", "ADX Definitivo"]          # other ways messages name it
    signal_types = ["Divergencia Alcista", "Divergencia Bajista"]
    [indicators.labels]                              # custom line labels used by this indicator
    "Fuerza ADX" = "adx"                             # -> extra["adx"]
    "Dirección" = "signal_type"                      # -> a standard field

A label maps to a standard field (``indicator``, ``ticker``, ``exchange``, ``price``, ``signal_type``,
``interval``, ``time``, ``bar_time``, ``fired_at``) or to any other name, which becomes the key in
``extra``. The words every message may use (the standard labels, JSON key spellings) are the parser's
vocabulary (vocabulary.toml), which the catalog carries.

Aliases are other spellings of the same indicator only (a missing "[APIDEVS]", an abbreviation, the
Spanish name); a different product, however alike its name, is a different indicator.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from signal_service.parsing.values import fold
from signal_service.parsing.vocabulary import Vocabulary, default_vocabulary

DEFAULT_CATALOG_PATH = Path(__file__).with_name("indicators.toml")


class IndicatorCatalogError(ValueError):
    """The catalog file is missing, unreadable or not shaped as documented."""


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    name: str
    aliases: tuple[str, ...] = ()
    signal_types: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)


class IndicatorCatalog:
    """Indicators with precompiled lookups; build once at startup and share (read-only)."""

    __slots__ = (
        "_all_signal_search",
        "_any_label",
        "_by_folded_name",
        "_generic_signal_search",
        "_indicator_search",
        "_known_signal_words",
        "_labels",
        "_signal_search_by_indicator",
        "_signal_types_folded",
        "generic_signal_types",
        "indicators",
        "vocabulary",
    )

    def __init__(
        self,
        indicators: Iterable[IndicatorSpec],
        *,
        generic_signal_types: Iterable[str] = (),
        labels: Mapping[str, str] | None = None,
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.vocabulary = vocabulary or default_vocabulary()
        self.indicators: tuple[IndicatorSpec, ...] = tuple(
            replace(spec, labels={fold(label): target for label, target in spec.labels.items()})
            for spec in indicators
        )
        self.generic_signal_types: tuple[str, ...] = tuple(generic_signal_types)
        # The catalog's own labels override the vocabulary's.
        self._labels: dict[str, str] = {
            **self.vocabulary.labels,
            **{fold(label): target for label, target in (labels or {}).items()},
        }
        self._by_folded_name: dict[str, IndicatorSpec] = {}
        for spec in self.indicators:
            for written in (spec.name, *spec.aliases):
                self._by_folded_name.setdefault(fold(written), spec)
        self._indicator_search = _phrase_search(
            written for spec in self.indicators for written in (spec.name, *spec.aliases)
        )
        self._signal_search_by_indicator = {
            spec.name: _phrase_search(spec.signal_types) for spec in self.indicators if spec.signal_types
        }
        self._all_signal_search = _phrase_search(
            signal for spec in self.indicators for signal in spec.signal_types
        )
        self._generic_signal_search = _phrase_search(self.generic_signal_types)
        self._signal_types_folded = {
            spec.name: frozenset(fold(signal) for signal in spec.signal_types) for spec in self.indicators
        }
        self._any_label = frozenset(
            (
                *self._labels,
                *(label for spec in self.indicators for label in spec.labels),
            )
        )
        self._known_signal_words = frozenset(
            fold(signal)
            for signal in (
                *self.generic_signal_types,
                *(s for spec in self.indicators for s in spec.signal_types),
            )
        )

    def __len__(self) -> int:
        return len(self.indicators)

    def indicator_named(self, written: str) -> IndicatorSpec | None:
        """The indicator whose name or alias is exactly ``written`` (ignoring case, accents, spacing)."""
        return self._by_folded_name.get(fold(written))

    def indicator_mentioned_in(self, text: str) -> tuple[IndicatorSpec, int, int] | None:
        """The first indicator named anywhere in ``text``, with the match's span."""
        if self._indicator_search is None:
            return None
        match = self._indicator_search.search(text)
        if match is None:
            return None
        spec = self.indicator_named(match.group(0))
        return (spec, match.start(), match.end()) if spec is not None else None

    def signal_type_mentioned_in(self, text: str, indicator: IndicatorSpec | None) -> str | None:
        """A known signal type found in ``text``, as written there; the indicator's own types first."""
        searches = (
            self._signal_search_by_indicator.get(indicator.name) if indicator else None,
            self._all_signal_search,
            self._generic_signal_search,
        )
        for search in searches:
            if search is not None and (match := search.search(text)) is not None:
                return match.group(0)
        return None

    def is_label(self, folded_label: str) -> bool:
        """Whether any indicator, the catalog or the standard format knows this line label."""
        return folded_label in self._any_label

    def is_signal_type_word(self, written: str) -> bool:
        return fold(written) in self._known_signal_words

    def emits(self, indicator: IndicatorSpec, signal_type: str) -> bool:
        signals = self._signal_types_folded.get(indicator.name)
        return not signals or fold(signal_type) in signals

    def label_target(self, folded_label: str, indicator: IndicatorSpec | None) -> str | None:
        """What a line label means: a standard field or an extra key; ``None`` when not a known label."""
        if indicator is not None and (target := indicator.labels.get(folded_label)) is not None:
            return target
        return self._labels.get(folded_label)


class _PhraseSearch:
    """Find any of many phrases, ignoring case, at word boundaries; the longest phrase wins at a position.

    Searching lowercased text with a lowercase pattern is several times faster than ``re.IGNORECASE``;
    the rare text whose length changes when lowercased falls back to the case-insensitive pattern.
    """

    __slots__ = ("_ignoring_case", "_lowercase")

    def __init__(self, phrases: set[str]) -> None:
        ordered = sorted(phrases, key=len, reverse=True)
        lowered = sorted({phrase.lower() for phrase in ordered}, key=len, reverse=True)
        self._lowercase = re.compile(rf"(?<!\w)(?:{'|'.join(map(re.escape, lowered))})(?!\w)")
        self._ignoring_case = re.compile(
            rf"(?<!\w)(?:{'|'.join(map(re.escape, ordered))})(?!\w)", re.IGNORECASE
        )

    def search(self, text: str) -> re.Match[str] | _Found | None:
        lowered = text.lower()
        if len(lowered) != len(text):
            return self._ignoring_case.search(text)
        match = self._lowercase.search(lowered)
        return None if match is None else _Found(text, match.start(), match.end())


@dataclass(frozen=True, slots=True)
class _Found:
    """A phrase found in lowercased text, reported as written in the original."""

    text: str
    begin: int
    finish: int

    def group(self, _: int = 0) -> str:
        return self.text[self.begin : self.finish]

    def start(self) -> int:
        return self.begin

    def end(self) -> int:
        return self.finish


def _phrase_search(phrases: Iterable[str]) -> _PhraseSearch | None:
    variants = {variant for phrase in phrases if phrase.strip() for variant in (phrase, fold(phrase))}
    return _PhraseSearch(variants) if variants else None


def load_indicator_catalog(path: Path | None = None) -> IndicatorCatalog:
    """Read a catalog file (``.toml``, or ``.yaml``/``.yml``); ``None`` reads the shipped default.

    Raises ``IndicatorCatalogError`` when the file is missing or malformed: a broken catalog is a
    deployment mistake to stop at startup, not something to parse around.
    """
    if path is None:
        return default_indicator_catalog()
    return _catalog_from_file(Path(path))


@cache
def default_indicator_catalog() -> IndicatorCatalog:
    """The shipped catalog, read once per process."""
    return _catalog_from_file(DEFAULT_CATALOG_PATH)


def _catalog_from_file(path: Path) -> IndicatorCatalog:
    try:
        raw_text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise IndicatorCatalogError(f"cannot read indicator catalog {path}: {error}") from error
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            document = yaml.safe_load(raw_text) or {}
        else:
            document = tomllib.loads(raw_text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise IndicatorCatalogError(f"indicator catalog {path} is not valid: {error}") from error
    return indicator_catalog_from_mapping(document, source=str(path))


def indicator_catalog_from_mapping(document: Any, *, source: str = "<mapping>") -> IndicatorCatalog:
    """Build a catalog from an already-decoded document (the shape described in this module)."""
    if not isinstance(document, Mapping):
        raise IndicatorCatalogError(f"{source}: the catalog must be a table/mapping")
    generic = document.get("generic", {})
    if not isinstance(generic, Mapping):
        raise IndicatorCatalogError(f"{source}: [generic] must be a table")
    indicators = document.get("indicators", [])
    if not isinstance(indicators, list):
        raise IndicatorCatalogError(f"{source}: indicators must be an array of tables ([[indicators]])")
    specs = [
        _indicator_spec(entry, f"{source}: indicators[{position}]")
        for position, entry in enumerate(indicators)
    ]
    names = [fold(spec.name) for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise IndicatorCatalogError(f"{source}: indicator names repeated: {', '.join(duplicates)}")
    return IndicatorCatalog(
        specs,
        generic_signal_types=_strings(generic.get("signal_types", []), f"{source}: generic.signal_types"),
        labels=_labels(document.get("labels", {}), f"{source}: labels"),
    )


def _indicator_spec(entry: Any, where: str) -> IndicatorSpec:
    if not isinstance(entry, Mapping):
        raise IndicatorCatalogError(f"{where} must be a table")
    unknown = set(entry) - {"name", "aliases", "signal_types", "labels", "description"}
    if unknown:
        raise IndicatorCatalogError(f"{where}: unknown keys {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise IndicatorCatalogError(f"{where}: name must be a non-empty string")
    return IndicatorSpec(
        name=name.strip(),
        aliases=_strings(entry.get("aliases", []), f"{where}.aliases"),
        signal_types=_strings(entry.get("signal_types", []), f"{where}.signal_types"),
        labels=_labels(entry.get("labels", {}), f"{where}.labels"),
    )


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise IndicatorCatalogError(f"{where} must be a list of non-empty strings")
    return tuple(item.strip() for item in value)


def _labels(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise IndicatorCatalogError(f"{where} must be a table of label = target")
    labels: dict[str, str] = {}
    for label, target in value.items():
        if (
            not isinstance(label, str)
            or not label.strip()
            or not isinstance(target, str)
            or not target.strip()
        ):
            raise IndicatorCatalogError(f"{where}: {label!r} = {target!r} must map a label to a field name")
        labels[fold(label)] = target.strip()
    return labels
