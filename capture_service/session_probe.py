"""Is a TradingView session signed in? One HTTP request, decided as TradingView's public API clients do.

TradingView's home page embeds the signed-in user's data (``"auth_token"``, the user's ``"id"`` and
``"username"``) for a valid ``sessionid``/``sessionid_sign`` pair and nothing of the kind otherwise. A bot
challenge, a WAF page, an error status or a timeout proves neither, so it is ``unknown``: retried, never
taken as a dead session. Redirects are followed only within the TradingView site, so the cookies never
leave it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin, urlsplit

import httpx

from capture_service.capture import TradingViewSession

Verdict = Literal["valid", "invalid", "unknown"]

MAX_REDIRECTS = 5
# Sent as a browser would: a WAF answers unknown clients with challenges, which only cost retries.
USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)

_AUTH_TOKEN = re.compile(r'"auth_token"\s*:\s*"([^"\\]+)"')
_USER_ID = re.compile(r'"id"\s*:\s*"?(\d{1,12})\b')
_USERNAME = re.compile(r'"username"\s*:\s*"([^"\\]{1,64})"')
# Markup of bot challenges and captcha walls (Cloudflare, reCAPTCHA, hCaptcha); TradingView's own pages
# load their sign-in captcha later, from script, so these never appear in a plain page's HTML.
_CHALLENGE_MARKERS = (
    "challenge-platform",
    "cf-chl",
    "cf-challenge",
    'id="challenge-form"',
    "<title>just a moment",
    "attention required",
    'class="g-recaptcha"',
    'class="h-captcha"',
)


@dataclass(frozen=True)
class SessionProbe:
    verdict: Verdict
    detail: str
    tradingview_user_id: str = ""
    username: str = ""
    requests: int = 0


def classify(status: int, body: str) -> tuple[Verdict, str, str, str]:
    """(verdict, detail, user id, username) for TradingView's answer to a signed request of its home page."""
    if status != 200:
        return "unknown", f"TradingView answered HTTP {status}", "", ""
    lowered = body.lower()
    token, user_id, username = _AUTH_TOKEN.search(body), _USER_ID.search(body), _USERNAME.search(body)
    if token and user_id and username:
        return "valid", "signed in", user_id.group(1), username.group(1)
    if any(marker in lowered for marker in _CHALLENGE_MARKERS):
        return "unknown", "TradingView answered with a bot challenge", "", ""
    return "invalid", "Wrong or expired sessionid/signature", "", ""


def same_site(url: str, base_url: str) -> bool:
    """Whether `url` belongs to the site of `base_url` (www.tradingview.com -> *.tradingview.com)."""
    host, base_host = urlsplit(url).hostname or "", urlsplit(base_url).hostname or ""
    if urlsplit(url).scheme not in ("http", "https") or not host:
        return False
    try:
        ipaddress.ip_address(base_host)
        return host == base_host
    except ValueError:
        labels = base_host.split(".")
        site = ".".join(labels[-2:]) if len(labels) >= 2 else base_host
        return host == site or host.endswith("." + site)


async def probe_session(
    client: httpx.AsyncClient, base_url: str, session: TradingViewSession
) -> SessionProbe:
    """GETs `base_url`'s home page with the session's cookies and says whether it signed the user in."""
    url = base_url.rstrip("/") + "/"
    cookie = f"sessionid={session.sessionid}; sessionid_sign={session.sessionid_sign}"
    for hop in range(1, MAX_REDIRECTS + 2):
        try:
            answer = await client.get(
                url, headers={"cookie": cookie, "user-agent": USER_AGENT}, follow_redirects=False
            )
        except httpx.HTTPError as exc:
            return SessionProbe("unknown", f"TradingView unreachable: {type(exc).__name__}", requests=hop)
        if answer.is_redirect and "location" in answer.headers:
            target = urljoin(url, answer.headers["location"])
            if not same_site(target, base_url):
                return SessionProbe("unknown", "TradingView redirected off its site", requests=hop)
            url = target
            continue
        verdict, detail, user_id, username = classify(answer.status_code, answer.text)
        return SessionProbe(verdict, detail, user_id, username, requests=hop)
    return SessionProbe("unknown", f"more than {MAX_REDIRECTS} redirects", requests=MAX_REDIRECTS + 1)
