#!/usr/bin/env bash
# Makes sure a Chromium exists for the capture workers: Playwright's own where it is installed, else the
# distribution's headless shell, else Playwright's download, else the headless shell installed with apt
# (as root), else the distribution's full browser. Prints what it found; capture_service/browser.py's
# find_chromium prefers them in the same order.
set -euo pipefail
py=${1:-.venv/bin/python}
headless_shell=/usr/lib/chromium/chromium-headless-shell

if [ -n "${ALERTS_CHROMIUM_PATH:-}" ] && [ -x "${ALERTS_CHROMIUM_PATH}" ]; then
  echo "chromium: ${ALERTS_CHROMIUM_PATH}"; exit 0
fi
if "$py" - <<'PY' 2>/dev/null
import os, sys
from playwright.sync_api import sync_playwright
with sync_playwright() as p:
    sys.exit(0 if os.path.exists(p.chromium.executable_path) else 1)
PY
then
  echo "chromium: Playwright's bundled browser"; exit 0
fi
if [ -x "$headless_shell" ]; then echo "chromium: $headless_shell"; exit 0; fi
echo "==> no Chromium headless shell found; trying 'playwright install chromium'"
if timeout 300 "$py" -m playwright install chromium >/tmp/alerts-playwright-install.log 2>&1; then
  echo "chromium: Playwright's bundled browser (just installed)"; exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "==> Playwright's download is not reachable; installing the distribution's chromium-headless-shell with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq chromium-headless-shell fonts-liberation >/dev/null; then
    echo "chromium: $headless_shell"; exit 0
  fi
fi
for candidate in /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -x "$candidate" ]; then echo "chromium: $candidate (the full browser: heavier than the headless shell)"; exit 0; fi
done
echo "No Chromium available: install your distribution's 'chromium-headless-shell' package, or run as root." >&2
exit 1
