"""deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json use only metrics the services export."""

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.settings import EdgeSettings

REPO_DIR = Path(__file__).resolve().parents[3]
DEPLOY_DIR = REPO_DIR / "deploy"
SOURCE_DIRS = (
    "mesh",
    "edge",
    "signal_service",
    "capture_service",
    "storage_service",
    "notify_service",
    "alerts",
)
_METRIC_DEFINITION = re.compile(r'\b(Counter|Gauge|Histogram|Summary)\(\s*"([a-z][a-z0-9_]*)"')


def exported_families() -> dict[str, str]:
    """Every prometheus_client metric the services define, by the name Prometheus sees -> its type."""
    families = {}
    for directory in SOURCE_DIRS:
        for path in (REPO_DIR / directory).rglob("*.py"):
            for kind, name in _METRIC_DEFINITION.findall(path.read_text()):
                if kind == "Counter" and not name.endswith("_total"):
                    name += "_total"
                families[name] = kind
    return families


FAMILIES = exported_families()
HISTOGRAMS = {name for name, kind in FAMILIES.items() if kind in {"Histogram", "Summary"}}
COUNTERS_AND_GAUGES = set(FAMILIES) - HISTOGRAMS
EXPORTED_SERIES = COUNTERS_AND_GAUGES | {
    f"{name}{suffix}" for name in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}
REQUIRED_ALERTS = {
    "AlertsTargetDown",
    "AlertsEdgeAbsent",
    "AlertsSignalAbsent",
    "AlertsCaptureAbsent",
    "AlertsStorageAbsent",
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


def family(series: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", series) if series not in COUNTERS_AND_GAUGES else series


def not_alerted_on() -> dict[str, str]:
    """The rules file's reasoned exclusion list: `#   name: why` lines after `# Not alerted on:`."""
    text = (DEPLOY_DIR / "prometheus" / "alerts.yml").read_text()
    block = text.split("# Not alerted on:\n", 1)[1].split("groups:", 1)[0]
    return dict(re.findall(r"^#\s+(alerts_[a-z0-9_]+): (.+)$", block, re.MULTILINE))


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
    reads_scrape_health = re.search(r"\bup\{", rule["expr"]) is not None
    assert used or reads_scrape_health, "an alert that reads no alerts_ metric nor the targets' up"
    assert used <= EXPORTED_SERIES
    assert balanced(rule["expr"])


def test_metric_discovery_finds_each_kind() -> None:
    assert FAMILIES["alerts_webhooks_total"] == "Counter"
    assert FAMILIES["alerts_spool_pending"] == "Gauge"
    assert "alerts_webhook_latency_seconds" in HISTOGRAMS
    assert len(FAMILIES) >= 30


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_exported_metric_has_a_rule_or_a_reason(name: str) -> None:
    alerted = {family(series) for rule in rules() for series in series_in(rule["expr"])}
    excluded = not_alerted_on()
    assert (name in alerted) != (name in excluded), (
        f"{name}: alert on it in deploy/prometheus/alerts.yml or list why not under '# Not alerted on:'"
        if name not in excluded
        else f"{name} has a rule and is also listed as not alerted on"
    )


def test_the_exclusion_list_names_only_exported_metrics_with_a_reason() -> None:
    excluded = not_alerted_on()
    assert excluded, "the exclusion list did not parse"
    assert set(excluded) <= set(FAMILIES)
    assert all(len(reason.split()) >= 3 for reason in excluded.values())


@pytest.mark.parametrize("name", ["alerts_spool_pending", "alerts_outbox_backlog", "alerts_jobs_in_progress"])
def test_absence_rules_watch_series_that_exist_without_labels(name: str) -> None:
    """absent() on a labelled series would fire until its first label set appears."""
    source = "\n".join(path.read_text() for d in SOURCE_DIRS for path in (REPO_DIR / d).rglob("*.py"))
    (definition,) = re.findall(rf'\(\s*"{name}"[^)]*\)', source)
    assert "[" not in definition, f"{name} has labels"
    assert any(rule["expr"] == f"absent({name})" for rule in rules())


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
    shown = {family(name) for name in used}
    assert set(FAMILIES) - shown == set(), "a metric family with no panel"
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
