"""deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json use only metrics the services export."""

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.settings import EdgeSettings

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"
COUNTERS_AND_GAUGES = {
    "alerts_webhooks_total",
    "alerts_grpc_server_handled_total",
    "alerts_queue_length",
    "alerts_jobs_in_progress",
    "alerts_active_workers",
    "alerts_captures_total",
    "alerts_browser_relaunches_total",
    "alerts_outbox_backlog",
    "alerts_spool_bytes",
    "alerts_spool_pending",
    "alerts_storage_bytes_written_total",
    "alerts_stream_subscribers",
    "alerts_notifications_total",
    "alerts_notifications_oldest_undelivered_seconds",
    "alerts_notification_deliveries",
}
HISTOGRAMS = {
    "alerts_webhook_latency_seconds",
    "alerts_grpc_server_latency_seconds",
    "alerts_capture_duration_seconds",
    "alerts_db_query_latency_seconds",
    "alerts_notification_latency_seconds",
}
EXPORTED_SERIES = COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
REQUIRED_ALERTS = {
    "AlertsCaptureQueueBacklog",
    "AlertsWebhookLatencyHigh",
    "AlertsCaptureFailureRate",
    "AlertsDatabaseSlow",
    "AlertsSpoolNotDraining",
    "AlertsOutboxBacklogGrowing",
    "AlertsNotificationsBehind",
    "AlertsNotificationFailures",
}
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def series_in(expression: str) -> set[str]:
    """Metric names an expression reads (label values in quotes are not names)."""
    return set(re.findall(r"\balerts_[a-z0-9_]+\b", _QUOTED.sub('""', expression)))


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY_DIR / "prometheus" / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY_DIR / "grafana" / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def balanced(expression: str) -> bool:
    """Brackets pair up outside quoted label values (promtool is not installable here)."""
    closing_to_opening = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _QUOTED.sub('""', expression):
        if char in "([{":
            stack.append(char)
        elif char in closing_to_opening and (not stack or stack.pop() != closing_to_opening[char]):
            return False
    return not stack


def test_series_extraction_ignores_label_values() -> None:
    assert series_in('sum(rate(alerts_x_total{queue="alerts_not_a_metric"}[5m]))') == {"alerts_x_total"}


def test_rule_file_structure() -> None:
    groups = yaml.safe_load((DEPLOY_DIR / "prometheus" / "alerts.yml").read_text())["groups"]
    assert len({group["name"] for group in groups}) == len(groups)
    names = [rule["alert"] for rule in rules()]
    assert len(set(names)) == len(names)
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, rule[
            "alert"
        ]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_issue_alerts_are_present() -> None:
    assert {rule["alert"] for rule in rules()} >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_rule_expression_reads_only_exported_metrics(rule: dict[str, Any]) -> None:
    used = series_in(rule["expr"])
    assert used, "an alert that reads no alerts_ metric"
    assert used <= EXPORTED_SERIES
    assert balanced(rule["expr"])


def test_thresholds_match_the_issue() -> None:
    expressions = {rule["alert"]: " ".join(rule["expr"].split()) for rule in rules()}
    assert expressions["AlertsCaptureQueueBacklog"].endswith("> 200")
    assert "histogram_quantile(0.99" in expressions["AlertsWebhookLatencyHigh"]
    assert expressions["AlertsWebhookLatencyHigh"].endswith("> 0.5")
    assert "> 0.10" in expressions["AlertsCaptureFailureRate"]


def test_spool_not_draining_fires_after_ten_minutes_pending() -> None:
    (rule,) = [rule for rule in rules() if rule["alert"] == "AlertsSpoolNotDraining"]
    assert " ".join(rule["expr"].split()) == "alerts_spool_pending > 0"
    assert rule["for"] == "10m"
    assert "poison" in rule["annotations"]["description"]


def test_spool_large_warns_before_the_edge_starts_refusing() -> None:
    (rule,) = [rule for rule in rules() if rule["alert"] == "AlertsSpoolLarge"]
    series, threshold = " ".join(rule["expr"].split()).split(" > ")
    assert series == "alerts_spool_bytes"
    threshold_bytes = math.prod(int(factor) for factor in threshold.split(" * "))
    assert 0 < threshold_bytes < EdgeSettings().spool_max_bytes, "past spool_max_bytes the edge answers 503"


def test_dashboard_reads_only_exported_metrics_and_shows_every_one() -> None:
    used = set().union(*(series_in(expression) for expression in dashboard_expressions()))
    assert used <= EXPORTED_SERIES
    shown = {
        re.sub(r"_(bucket|sum|count)$", "", name) if name not in COUNTERS_AND_GAUGES else name
        for name in used
    }
    assert shown == COUNTERS_AND_GAUGES | HISTOGRAMS
    assert all(balanced(expression) for expression in dashboard_expressions())


def test_dashboard_layout() -> None:
    dashboard = json.loads((DEPLOY_DIR / "grafana" / "dashboard.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    assert [variable["name"] for variable in dashboard["templating"]["list"]] == ["datasource"]
