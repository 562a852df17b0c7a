"""deploy/Dockerfile: the stages compose and Kubernetes name exist, run as non-root, and copy real paths."""

import re
from pathlib import Path

import yaml

REPO_DIR = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO_DIR / "deploy" / "Dockerfile"


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), in file order."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    for raw_line in joined.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = stages.setdefault(match.group(1), [])
        current.append(line)
    return stages


def test_stages_exist_and_app_is_the_default_target() -> None:
    stages = dockerfile_stages()
    assert {"builder", "runtime", "capture", "gcs-emulator", "app"} <= set(stages)
    assert list(stages)[-1] == "app"


def test_image_stages_end_as_a_non_root_user() -> None:
    for name in ("capture", "gcs-emulator", "app"):
        users = [line.split()[1] for line in dockerfile_stages()[name] if line.upper().startswith("USER ")]
        assert users, f"stage {name} sets no USER"
        assert users[-1].split(":")[0] not in {"root", "0"}, f"stage {name} ends as root"


def test_capture_stage_ships_debians_chromium_headless_shell() -> None:
    capture = " ".join(dockerfile_stages()["capture"])
    assert "apt-get install" in capture
    assert re.search(r"\bchromium-headless-shell\b", capture)
    assert "ALERTS_CHROMIUM_PATH=/usr/lib/chromium/chromium-headless-shell" in capture
    assert "playwright install" not in capture


def test_copied_sources_exist_in_the_repository() -> None:
    for name, instructions in dockerfile_stages().items():
        for line in instructions:
            if not line.upper().startswith("COPY ") or "--from=" in line:
                continue
            sources = line.split()[1:-1]
            for source in sources:
                matches = list(REPO_DIR.glob(source.rstrip("/")))
                # A wildcard may match nothing (BuildKit allows it); a plain path must exist.
                assert matches or any(char in source for char in "*?["), f"{name}: COPY {source} missing"


def test_compose_build_targets_are_dockerfile_stages() -> None:
    compose = yaml.safe_load((REPO_DIR / "deploy" / "compose.yaml").read_text())
    targets = {service["build"]["target"] for service in compose["services"].values() if "build" in service}
    assert targets == {"app", "capture", "gcs-emulator"}
    assert targets <= set(dockerfile_stages())
