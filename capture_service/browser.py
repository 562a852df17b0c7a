"""One Chromium per worker process, a fresh isolated context per capture.

Launching Chromium costs about a second and 100+ MB, so a worker keeps one browser for its lifetime; what
must never be shared between users (cookies, storage, cache) lives in a BrowserContext, which is cheap and
is closed after every job. When Chromium dies (OOM killer, crash, someone killing it), the pool notices
the disconnect and the next job launches a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Playwright, async_playwright
from playwright.async_api import Error as PlaywrightError
from prometheus_client import Counter

from capture_service.errors import BrowserUnavailableError

log = logging.getLogger(__name__)

BROWSER_RELAUNCHES = Counter(
    "alerts_browser_relaunches_total", "Chromium launched again after the first (it crashed or hung)"
)

# What Playwright 1.65 disables by default. Chromium keeps only the last --disable-features, so ours has to
# repeat these; tests/integration/capture_service/test_capture_chart.py checks none is lost on an upgrade.
PLAYWRIGHT_DISABLED_FEATURES = (
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
    "msForceBrowserSignIn",
    "msEdgeUpdateLaunchServicesPreferredVersion",
)
# The full browser in headless mode (used where no headless shell is installed) still builds a window per
# context, and each window preloaded the omnibox popup's WebUI in a renderer of its own
# (chrome://omnibox-popup.top-chrome): about 45 MB PSS per context in flight and much of the CPU. The
# spare renderer is started for the default profile, which Playwright's contexts never use, so it only ever
# sat idle.
UNNEEDED_FEATURES = (
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
    "WebUIOmniboxFullPopup",
    "PreloadTopChromeWebUI",
    "SpareRendererForSitePerProcess",
)
CHROMIUM_ARGS = (
    "--disable-gpu",
    # Debian's chromium wrapper turns GPU rasterization on; with no GPU that meant SwiftShader rasterizing
    # in the GPU process, about 35 MB more there than rasterizing in the renderers.
    "--disable-gpu-rasterization",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    # Containers often give /dev/shm 64 MB, which a few chart tabs exhaust; /tmp has room.
    "--disable-dev-shm-usage",
    "--disable-features=" + ",".join((*PLAYWRIGHT_DISABLED_FEATURES, *UNNEEDED_FEATURES)),
    # A chart page's young generation never needs V8's default 16 MB semi-spaces.
    "--js-flags=--max-semi-space-size=1",
)
# Chromium's headless shell (what Playwright itself launches for headless) comes first: it has no browser
# UI layer, so no window, tab strip or profile machinery per context. Against the chart stub it halved the
# capture time and took about 150 MB less than the full browser in headless mode, with byte-identical PNGs.
# Debian's /usr/bin/chromium-headless-shell is a shell script that stays as Chromium's parent, so its binary
# is named directly.
SYSTEM_CHROMIUM_CANDIDATES = (
    "/usr/lib/chromium/chromium-headless-shell",
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)


# The only variables Chromium gets: what it needs to find its libraries, fonts, locale and a writable
# home. Everything else (ALERTS_* settings, database and Redis URLs, API keys, cloud credentials) stays out
# of its /proc/<pid>/environ, which every third-party script of a chart page runs next to.
CHROMIUM_ENVIRONMENT = (
    "PATH",
    "HOME",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_RUNTIME_DIR",
    "FONTCONFIG_FILE",
    "FONTCONFIG_PATH",
)
_CLONE_NEWUSER = 0x10000000
# Runs in a child: unshare(CLONE_NEWUSER) succeeds exactly when Chromium's namespace sandbox can start.
_USER_NAMESPACE_PROBE = (
    "import ctypes, os; "
    f"os._exit(0 if ctypes.CDLL(None, use_errno=True).unshare({_CLONE_NEWUSER}) == 0 else 1)"
)


def chromium_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    return {name: source[name] for name in CHROMIUM_ENVIRONMENT if name in source}


def sandbox_unavailable_reason() -> str | None:
    """Why Chromium cannot use its sandbox here, or None when it can.

    Chromium refuses to sandbox as root, and its sandbox needs unprivileged user namespaces (Debian's
    chromium ships no setuid helper); containers often forbid them (Docker's default seccomp profile,
    AppArmor's restrict_unprivileged_userns, user.max_user_namespaces = 0). Probed for real in a child
    process rather than guessed from sysctls, which differ between kernels.
    """
    if os.geteuid() == 0:
        return "running as root"
    probe = subprocess.run(  # noqa: S603 (our own interpreter, a fixed program)
        [sys.executable, "-c", _USER_NAMESPACE_PROBE],
        env=chromium_environment(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return "unprivileged user namespaces are not available"
    return None


@dataclass(frozen=True)
class Cookie:
    name: str
    value: str
    domain: str
    secure: bool


def find_chromium(configured: Path | None, bundled: str) -> Path | None:
    """The configured executable, else None when Playwright's own download is installed (Playwright then
    launches its headless shell), else the system's, headless shell first."""
    if configured is not None:
        if not configured.exists():
            raise FileNotFoundError(f"ALERTS_CHROMIUM_PATH {configured} does not exist")
        return configured
    if bundled and Path(bundled).exists():
        return None
    for name in SYSTEM_CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    raise FileNotFoundError(
        "no Chromium found: run `playwright install chromium`, install the `chromium-headless-shell` "
        "package, or set ALERTS_CHROMIUM_PATH"
    )


class BrowserPool:
    """Hands out isolated browser contexts backed by one shared, self-healing Chromium.

    Must be used from one event loop; contexts may be used concurrently.
    """

    def __init__(
        self,
        *,
        executable_path: Path | None = None,
        viewport: tuple[int, int] = (1280, 720),
        extra_args: Sequence[str] = (),
    ) -> None:
        self._configured_path = executable_path
        self._viewport = {"width": viewport[0], "height": viewport[1]}
        self._args = [*CHROMIUM_ARGS, *extra_args]
        self._playwright: Playwright | None = None
        self._browser: Browser | None = None
        self._user_agent = ""
        self._lock = asyncio.Lock()
        self._sandbox: bool | None = None
        self.launches = 0
        self.launched = ""

    async def start(self) -> None:
        await self._connected_browser()

    async def close(self) -> None:
        async with self._lock:
            browser, self._browser = self._browser, None
            if browser is not None:
                try:
                    await browser.close()
                except PlaywrightError as exc:
                    log.warning("closing Chromium failed", extra={"error": str(exc)})
            if self._playwright is not None:
                await self._playwright.stop()
                self._playwright = None

    @asynccontextmanager
    async def context(self, cookies: Sequence[Cookie]) -> AsyncIterator[BrowserContext]:
        """A new context holding exactly `cookies`; closed on exit whatever happens inside."""
        browser = await self._connected_browser()
        try:
            context = await self._new_context(browser)
        except PlaywrightError:
            # Chromium may have died since the last job without the disconnect being noticed yet.
            await self._discard(browser)
            try:
                context = await self._new_context(await self._connected_browser())
            except PlaywrightError as exc:
                raise BrowserUnavailableError(f"cannot open a browser context: {exc}") from exc
        try:
            if cookies:
                await context.add_cookies(
                    [
                        {
                            "name": cookie.name,
                            "value": cookie.value,
                            "domain": cookie.domain,
                            "path": "/",
                            "httpOnly": True,
                            "secure": cookie.secure,
                            "sameSite": "Lax",
                        }
                        for cookie in cookies
                    ]
                )
            yield context
        finally:
            try:
                await context.close()
            except PlaywrightError as exc:
                # The browser went away with the context in it; nothing is left to close.
                log.debug("closing a browser context failed", extra={"error": str(exc)})

    async def _discard(self, browser: Browser) -> None:
        async with self._lock:
            if self._browser is not browser:
                return
            self._browser = None
        log.warning("Chromium stopped answering; replacing it")
        try:
            await browser.close()
        except PlaywrightError as exc:
            log.debug("closing an unresponsive Chromium failed", extra={"error": str(exc)})

    async def _new_context(self, browser: Browser) -> BrowserContext:
        return await browser.new_context(
            viewport=self._viewport,  # type: ignore[arg-type]
            device_scale_factor=1,
            locale="en-US",
            timezone_id="UTC",
            user_agent=self._user_agent,
            service_workers="block",
        )

    async def _connected_browser(self) -> Browser:
        async with self._lock:
            if self._browser is not None and self._browser.is_connected():
                return self._browser
            if self._browser is not None:
                log.warning("Chromium disconnected; launching a new one", extra={"launches": self.launches})
            self._browser = await self._launch()
            return self._browser

    async def _launch(self) -> Browser:
        if self._playwright is None:
            self._playwright = await async_playwright().start()
        executable = find_chromium(self._configured_path, self._playwright.chromium.executable_path)
        where = str(executable) if executable else "Playwright's own Chromium"
        if self._sandbox is None:
            reason = await asyncio.to_thread(sandbox_unavailable_reason)
            self._sandbox = reason is None
            if reason is not None:
                log.warning("Chromium runs without its sandbox", extra={"reason": reason})
        try:
            browser = await self._playwright.chromium.launch(
                executable_path=executable,
                args=self._args,
                headless=True,
                chromium_sandbox=self._sandbox,
                env=chromium_environment(),  # type: ignore[arg-type]
            )
        except PlaywrightError as exc:
            # The driver itself may be what died; a fresh one costs little and recovers that case too.
            await self._playwright.stop()
            self._playwright = None
            raise BrowserUnavailableError(f"cannot launch {where}: {exc}") from exc
        major = browser.version.split(".", 1)[0]
        # Headless Chromium announces itself as "HeadlessChrome", which sites may treat differently.
        self._user_agent = (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{major}.0.0.0 Safari/537.36"
        )
        self.launches += 1
        sandbox = "sandboxed" if self._sandbox else "no sandbox"
        self.launched = f"{where}, version {browser.version}, {sandbox}"
        if self.launches > 1:
            BROWSER_RELAUNCHES.inc()
        log.info(
            "Chromium launched",
            extra={"executable": where, "version": browser.version, "sandbox": self._sandbox},
        )
        return browser
