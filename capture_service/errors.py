"""Why a capture attempt failed, as the machine-readable reason the signal service stores.

``retryable`` decides whether Dramatiq tries again: a logged-out session stays logged out however often
it is retried, a slow chart may well load on the next attempt.
"""

from __future__ import annotations


class CaptureError(Exception):
    reason = "chart_error"
    retryable = True


class ChartTimeoutError(CaptureError):
    reason = "timeout"


class ChartPageError(CaptureError):
    """The chart page answered with an error, crashed, or never showed a chart."""

    reason = "chart_error"


class BrowserUnavailableError(CaptureError):
    """Chromium died or could not be started; the pool relaunches it for the next attempt."""

    reason = "browser_error"


class DependencyUnavailableError(CaptureError):
    """A service the job needs did not answer (it is down, restarting, or its database is): the chart is
    not at fault, so the job waits for it without using up a retry (see capture_service/tasks.py)."""


class StorageUnavailableError(DependencyUnavailableError):
    reason = "storage_unavailable"


class SignalServiceUnavailableError(DependencyUnavailableError):
    reason = "signal_unavailable"


class StorageRefusedError(CaptureError):
    """The storage service answered, with an error other than "unavailable"."""

    reason = "storage_error"


class SignalServiceRefusedError(CaptureError):
    """The signal service answered, with an error other than "unavailable"."""

    reason = "signal_error"


class InfrastructureUnavailableError(CaptureError):
    """A dependency stayed unavailable past ALERTS_CAPTURE_INFRASTRUCTURE_DEADLINE_SECONDS."""

    reason = "infrastructure_unavailable"
    retryable = False


class SessionInvalidError(CaptureError):
    """TradingView did not sign the user in: the cookies are expired or wrong."""

    reason = "tradingview_session_invalid"
    retryable = False


class SessionMissingError(CaptureError):
    reason = "tradingview_session_missing"
    retryable = False


class SessionUndecryptableError(CaptureError):
    """No configured cookie key opens the stored session: a deployment problem, not the user's."""

    reason = "tradingview_session_undecryptable"
    retryable = False


class LayoutUnavailableError(CaptureError):
    """The requested layout did not open (private, deleted, or not shared with this session)."""

    reason = "layout_unavailable"
    retryable = False


class SessionCheckInconclusiveError(CaptureError):
    """TradingView answered neither signed in nor signed out (a captcha, a WAF, an outage): ask again."""

    reason = "tradingview_unreachable"
