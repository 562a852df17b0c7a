"""The end of `alerts demo`: each alert's verdict, the table it prints, the screenshots saved as PNG files
and the viewer links."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from apidevs.alerts.v1 import resources_pb2

if TYPE_CHECKING:
    from alerts.demo import Console, Delivery, DemoUser
    from alerts.dev import DevStack

_STATUS = resources_pb2.ScreenshotStatus


def short_id(identifier: str) -> str:
    """The random tail of a UUID: ids made in the same millisecond share their (time-ordered) head."""
    return f"…{identifier[-8:]}" if identifier else "-"


def telegram_alert(signal_row: resources_pb2.Signal | None) -> resources_pb2.NotificationDelivery | None:
    deliveries = signal_row.deliveries if signal_row is not None else ()
    return next(
        (
            d
            for d in deliveries
            if d.channel == resources_pb2.NOTIFICATION_CHANNEL_TELEGRAM
            and d.kind == resources_pb2.NOTIFICATION_KIND_ALERT
        ),
        None,
    )


def _telegram_cell(signal_row: resources_pb2.Signal | None) -> str:
    alert = telegram_alert(signal_row)
    if alert is None:
        return "-"
    if alert.status != resources_pb2.DELIVERY_STATUS_DELIVERED:
        return resources_pb2.DeliveryStatus.Name(alert.status).removeprefix("DELIVERY_STATUS_").lower()
    if alert.with_photo:
        return "photo+caption"
    assert signal_row is not None
    photo_sent = any(
        d.kind == resources_pb2.NOTIFICATION_KIND_PHOTO
        and d.status == resources_pb2.DELIVERY_STATUS_DELIVERED
        for d in signal_row.deliveries
    )
    return "text, photo reply" if photo_sent else "text"


def save_screenshots(deliveries: list[Delivery], shots_dir: Path) -> None:
    """Each screenshot as a plain PNG file (stored objects carry storage's own trailer)."""
    for delivery in deliveries:
        if delivery.signal is None or not delivery.screenshot_png:
            continue
        shots_dir.mkdir(parents=True, exist_ok=True)
        symbol = delivery.signal.symbol or delivery.signal.ticker.rpartition(":")[2] or "chart"
        path = shots_dir / f"{delivery.number:02d}-{delivery.alert.plan}-{symbol}.png"
        path.write_bytes(delivery.screenshot_png)
        delivery.screenshot_file = path


def _verdict(delivery: Delivery) -> list[str]:
    problems = list(delivery.problems)
    signal_row = delivery.signal
    if signal_row is None:
        problems.append("not stored")
    elif delivery.alert.capturable:
        if signal_row.screenshot_status != _STATUS.SCREENSHOT_STATUS_COMPLETED:
            problems.append(f"screenshot {delivery.status_name} {signal_row.screenshot_error}".rstrip())
        elif delivery.screenshot_file is None:
            problems.append("screenshot not downloadable")
    elif signal_row.screenshot_status != _STATUS.SCREENSHOT_STATUS_SKIPPED:
        problems.append(f"malformed alert was not skipped but {delivery.status_name}")
    if delivery.alert.plan == "premium" and _telegram_cell(signal_row) in ("-", "pending", "sending"):
        problems.append("no Telegram delivery")
    return problems


def _display_path(path: Path | None, fallback: str) -> str:
    if path is None:
        return fallback
    with contextlib.suppress(ValueError):
        return "./" + str(path.relative_to(Path.cwd()))
    return str(path)


def _seconds_to_screenshot(signal_row: resources_pb2.Signal | None) -> str:
    if signal_row is None or not signal_row.HasField("screenshot_completed_at"):
        return "-"
    elapsed = signal_row.screenshot_completed_at.ToDatetime() - signal_row.created_at.ToDatetime()
    return f"{elapsed.total_seconds():.1f} s"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    line = "  ".join("-" * width for width in widths)

    def render(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    return "\n".join(text.rstrip() for text in [render(headers), line, *(render(row) for row in rows)])


def report(stack: DevStack, users: list[DemoUser], deliveries: list[Delivery], console: Console) -> bool:
    headers = [
        "#", "signal", "user", "plan", "indicator", "ticker", "price", "type", "screenshot", "webhook",
        "to screenshot", "telegram", "screenshot file (or URL)",
    ]  # fmt: skip
    rows = []
    for delivery in deliveries:
        row = delivery.signal
        rows.append(
            [
                str(delivery.number),
                short_id(delivery.signal_id),
                short_id(delivery.user.user_id),
                delivery.alert.plan,
                (row.indicator if row else "") or "-",
                (row.ticker if row else "") or "-",
                (row.price if row else "") or "-",
                (row.signal_type if row else "") or "-",
                delivery.status_name,
                f"{delivery.answer_ms:.0f} ms" if delivery.http_status else "-",
                _seconds_to_screenshot(row),
                _telegram_cell(row),
                _display_path(delivery.screenshot_file, (row.screenshot_url if row else "") or "-"),
            ]
        )
    console.say()
    console.say(format_table(headers, rows))
    console.say()

    failures = {delivery.number: _verdict(delivery) for delivery in deliveries}
    for number, problems in failures.items():
        if problems:
            console.say(f"FAILED #{number}: {'; '.join(problems)}")
    passed = not any(failures.values())
    captured = sum(1 for d in deliveries if d.screenshot_file is not None)
    valid = sum(1 for d in deliveries if d.alert.capturable)
    if passed:
        console.say(
            f"OK: all {len(deliveries)} alerts stored; {captured} of {valid} valid alerts captured; "
            "the malformed one stored with its raw bytes and no screenshot."
        )
    shots = next((d.screenshot_file.parent for d in deliveries if d.screenshot_file), None)
    if shots is not None:
        console.say(f"\nScreenshots (PNG):  {_display_path(shots, str(shots))}/")
    objects = stack.settings.data_dir.resolve() / "objects"
    if objects.is_dir():
        console.say(f"Stored objects:     {_display_path(objects, str(objects))}/  (storage's own layout)")
    console.say(
        "\nSignal viewer, one link per user (a read-only access token in the # fragment, which no server "
        "sees; `alerts token revoke <user id>` ends it):"
    )
    for user in users:
        console.say(f"  {user.plan:<8} {stack.edge_url}/ui#token={user.viewer_token}")
    console.say(
        "The viewer works while the services run: `alerts demo --stay` keeps them running after this table."
    )
    return passed
