"""What the readers collect from a message before the values are checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from signal_service.parsing.catalog import IndicatorSpec


@dataclass(slots=True)
class Draft:
    """Values as written, collected before being checked; the first source to set a field wins."""

    written: dict[str, Any] = field(default_factory=dict)
    # The catalog indicator the message is read as: its labels and signal types apply.
    indicator_spec: IndicatorSpec | None = None
    # A plain "time" that names the bar's time only if the message also says when the alert fired; the
    # extra key it goes to when it is neither the bar's time nor the alert time.
    time_beside_fired_at: Any = None
    time_beside_extra_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def offer(self, field_name: str, value: Any) -> bool:
        if field_name in self.written or value is None:
            return False
        self.written[field_name] = value
        return True

    def lacks(self, *field_names: str) -> bool:
        return not all(map(self.written.__contains__, field_names))

    def add_extra(self, key: str, value: Any) -> None:
        if key not in self.extra:
            self.extra[key] = value
        elif isinstance(self.extra[key], list):
            self.extra[key].append(value)
        else:
            self.extra[key] = [self.extra[key], value]
