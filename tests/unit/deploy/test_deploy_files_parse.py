"""Every deployment file parses, and nothing in deploy/ carries a literal secret."""

import json
import re
from pathlib import Path

import pytest
import yaml

DEPLOY_DIR = Path(__file__).resolve().parents[3] / "deploy"
YAML_FILES = sorted([*DEPLOY_DIR.rglob("*.yaml"), *DEPLOY_DIR.rglob("*.yml")])


def test_deploy_tree_has_the_expected_files() -> None:
    expected = [
        "Dockerfile",
        "compose.yaml",
        "healthcheck.py",
        "envoy/envoy.yaml",
        "prometheus/alerts.yml",
        "grafana/dashboard.json",
        "k8s/base/kustomization.yaml",
        "k8s/overlays/production/kustomization.yaml",
    ]
    missing = [name for name in expected if not (DEPLOY_DIR / name).is_file()]
    assert missing == []


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda path: str(path.relative_to(DEPLOY_DIR)))
def test_yaml_file_parses_into_mappings(path: Path) -> None:
    documents = [document for document in yaml.safe_load_all(path.read_text()) if document is not None]
    assert documents, f"{path} holds no YAML document"
    assert all(isinstance(document, dict) for document in documents)


def test_grafana_dashboard_is_json() -> None:
    dashboard = json.loads((DEPLOY_DIR / "grafana" / "dashboard.json").read_text())
    assert dashboard["uid"]
    assert dashboard["panels"]


# Long random-looking tokens (keys, passwords) have no business in committed deployment files.
# REPLACE_ME_... placeholders are the templates' way of saying where a secret goes. A generated secret has
# digits; a header name (`key: Strict-Transport-Security`) has none.
_SECRET_LIKE = re.compile(
    r"(?i)(password|secret|key|token)[ \t]*[:=][ \t]*['\"]?(?!REPLACE_ME)(?=[A-Za-z+/=_-]*[0-9])"
    r"([A-Za-z0-9+/=_-]{24,})"
)


@pytest.mark.parametrize(
    "path",
    sorted(
        path
        for path in DEPLOY_DIR.rglob("*")
        if path.is_file() and path.suffix in {".yaml", ".yml", ".example"}
    ),
    ids=lambda path: str(path.relative_to(DEPLOY_DIR)),
)
def test_no_literal_secrets(path: Path) -> None:
    hits = [match.group(0) for match in _SECRET_LIKE.finditer(path.read_text())]
    assert hits == []
