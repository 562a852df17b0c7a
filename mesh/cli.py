"""The `alerts` command: the composition root, the one module that may import every service's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from mesh.errors import ConfigurationError
from mesh.logging import configure_logging
from mesh.settings import CommonSettings

log = logging.getLogger("alerts")
_T = TypeVar("_T")

SERVE_TARGETS = ("edge", "signal", "storage", "capture", "chart-stub")
# What production containers run; deploy/ may use only these (its tests check against this).
PRODUCTION_COMMANDS = (
    ("migrate",),
    ("serve", "edge"),
    ("serve", "signal"),
    ("serve", "storage"),
    ("serve", "capture"),
    # Scheduled (a daily CronJob); takes an optional --retention-days.
    ("audit", "prune"),
)


def _serve(target: str, options: argparse.Namespace) -> int:
    if target == "edge":
        from edge.main import run as run_edge

        run_edge()
    elif target == "signal":
        from signal_service.main import run as run_signal

        run_signal()
    elif target == "storage":
        from storage_service.main import run as run_storage

        run_storage()
    elif target == "capture":
        from capture_service.main import run_worker

        run_worker()
    elif target == "chart-stub":
        from capture_service.main import run_chart_stub

        run_chart_stub(options.host, options.port)
    return 0


def _migrate(options: argparse.Namespace) -> int:
    from signal_service.migrate import upgrade
    from signal_service.settings import DatabaseJobSettings

    configure_logging("migrate")
    settings = DatabaseJobSettings()
    upgrade(settings.database_url)
    log.info("migrations applied")
    return 0


def _dev(options: argparse.Namespace) -> int:
    from mesh.dev import DevStack

    configure_logging("dev")
    stack = DevStack(CommonSettings(), capture_workers=options.capture_workers)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print("starting embedded infrastructure and services...", flush=True)
    stack.start()
    try:
        print(
            "\nalerts dev is running\n"
            f"  webhooks:     {stack.edge_url}/webhook/u/<token>\n"
            "                (create a user: alerts user create --plan premium)\n"
            f"  health:       {stack.edge_url}/health\n"
            f"  OpenAPI:      {stack.edge_url}/schema\n"
            f"  viewer:       {stack.edge_url}/ui  (a user id and a key scoped to it, see ALERTS_API_KEYS)\n"
            f"  gRPC signal:  {stack.settings.signal_addr}   storage: {stack.settings.storage_addr}\n"
            f"  chart stub:   {stack.env.get('ALERTS_TRADINGVIEW_URL', '(real TradingView)')}\n"
            f"  API key:      {stack.api_key}\n"
            f"  logs:         {stack.log_dir}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        while not stopping:
            dead = [name for name, process in stack.processes.items() if not process.alive()]
            if dead:
                print(f"process exited: {', '.join(dead)}; see {stack.log_dir}/", file=sys.stderr, flush=True)
                return 1
            time.sleep(0.5)
    finally:
        print("stopping...", flush=True)
        stack.stop()
    return 0


def _demo(options: argparse.Namespace) -> int:
    from mesh.demo import demo_settings, run_demo

    # The demo's own output is the progress and the table; the services log to files under the data dir.
    configure_logging("demo", level="WARNING")
    return run_demo(
        demo_settings(),
        timeout_seconds=options.timeout,
        capture_workers=options.capture_workers,
        stay=options.stay,
    )


def _client_settings() -> tuple[str, str | None]:
    """Where the signal service is and which key to present: the environment, else a running `alerts dev`."""
    from mesh.dev import read_dev_state

    settings = CommonSettings()
    if settings.service_api_key:
        return settings.signal_addr, settings.service_api_key.get_secret_value()
    state = read_dev_state(settings.data_dir)
    return state.get("signal_addr", settings.signal_addr), state.get("api_key")


def _user_create(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, user_service_pb2, user_service_pb2_grpc
    from mesh.grpc import open_channel

    plan = getattr(resources_pb2, f"PLAN_{options.plan.upper()}")
    address, key = _client_settings()

    async def create() -> user_service_pb2.CreateUserResponse:
        async with open_channel(address, key) as channel:
            stub = user_service_pb2_grpc.UserServiceStub(channel)
            created = await stub.CreateUser(
                user_service_pb2.CreateUserRequest(
                    external_id=options.external_id or "", plan=plan, default_chart_id=options.chart or ""
                )
            )
            if options.sessionid and options.sessionid_sign:
                await stub.SetTradingViewSession(
                    user_service_pb2.SetTradingViewSessionRequest(
                        user_id=created.user.user_id,
                        sessionid=options.sessionid,
                        sessionid_sign=options.sessionid_sign,
                    )
                )
            return created

    created = asyncio.run(create())
    print(f"user_id:     {created.user.user_id}")
    print(f"plan:        {options.plan}")
    print(f"webhook URL: {created.webhook_url}")
    print("The webhook URL is shown only once; keep it secret.")
    return 0


def _keys_rotate(options: argparse.Namespace) -> int:
    from mesh.crypto import CookieCipher
    from signal_service.database import Database, create_engine
    from signal_service.keys import KeyRotationReport, reencrypt_sessions
    from signal_service.settings import get_settings

    configure_logging("keys")
    settings = get_settings()
    cipher = CookieCipher.from_settings(settings)

    async def rotate() -> KeyRotationReport:
        database = Database(create_engine(settings.database_url, pool_size=1))
        try:
            return await reencrypt_sessions(database, cipher, batch_size=options.batch_size)
        finally:
            await database.dispose()

    report = asyncio.run(rotate())
    print(f"sessions examined: {report.examined}; re-encrypted to {report.key_id!r}: {report.reencrypted}")
    if report.unreadable:
        print(
            f"{len(report.unreadable)} sessions open with no configured key and were left as they are: "
            + ", ".join(str(user_id) for user_id in report.unreadable),
            file=sys.stderr,
        )
        return 1
    return 0


def _keys_generate(options: argparse.Namespace) -> int:
    from mesh.crypto import generate_key_entry

    print(generate_key_entry(options.key_id))
    return 0


def _audit_prune(options: argparse.Namespace) -> int:
    from signal_service.audit import prune_audit_log
    from signal_service.database import Database, create_engine
    from signal_service.settings import DatabaseJobSettings

    configure_logging("audit")
    settings = DatabaseJobSettings()
    retention_days = options.retention_days or settings.audit_retention_days

    async def prune() -> int:
        database = Database(create_engine(settings.database_url, pool_size=1))
        try:
            return await prune_audit_log(database, retention_days=retention_days)
        finally:
            await database.dispose()

    print(f"audit rows older than {retention_days} days deleted: {asyncio.run(prune())}")
    return 0


def _captures_failed(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = _client_settings()

    async def list_failed() -> list[resources_pb2.Signal]:
        signals: list[resources_pb2.Signal] = []
        async with open_channel(address, key) as channel:
            stub = signal_service_pb2_grpc.SignalServiceStub(channel)
            page_token = ""
            while True:
                page = await stub.ListFailedCaptures(
                    signal_service_pb2.ListFailedCapturesRequest(
                        user_id=options.user or "", page_size=100, page_token=page_token
                    )
                )
                signals.extend(page.signals)
                page_token = page.next_page_token
                if not page_token or len(signals) >= options.limit:
                    return signals[: options.limit]

    signals = _grpc_call(list_failed)
    if signals is None:
        return 1
    for failed in signals:
        created = failed.created_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        print(
            f"{failed.signal_id}  user {failed.user_id}  {created}  {failed.ticker or '-'}  "
            f"{failed.screenshot_error or 'no reason recorded'}"
        )
    print(f"{len(signals)} failed capture(s)", file=sys.stderr)
    return 0


def _captures_retry(options: argparse.Namespace) -> int:
    from apidevs.alerts.v1 import signal_service_pb2, signal_service_pb2_grpc
    from mesh.grpc import open_channel

    address, key = _client_settings()

    async def retry() -> int:
        async with open_channel(address, key) as channel:
            answer = await signal_service_pb2_grpc.SignalServiceStub(channel).RetryCaptures(
                signal_service_pb2.RetryCapturesRequest(
                    signal_ids=options.signal_ids, all_failed=options.all_failed
                )
            )
            return answer.requeued_count

    requeued = _grpc_call(retry)
    if requeued is None:
        return 1
    print(f"captures re-queued: {requeued}")
    return 0


def _grpc_call(call: Callable[[], Awaitable[_T]]) -> _T | None:
    """Runs one client call; a refusal is printed as the service put it rather than as a traceback."""
    import grpc

    from mesh.errors import from_rpc_error

    try:
        return asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        error = from_rpc_error(exc)
        reason = f" ({error.reason})" if error.reason else ""
        print(f"error: {exc.code().name}{reason}: {error}", file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alerts", description="TradingView alerts microservice")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("target", choices=SERVE_TARGETS)
    serve.add_argument("--host", default="127.0.0.1", help="chart-stub only")
    serve.add_argument("--port", type=int, default=8090, help="chart-stub only")
    serve.set_defaults(handler=lambda options: _serve(options.target, options))

    dev = commands.add_parser("dev", help="run everything locally (embedded PostgreSQL and Redis when unset)")
    dev.add_argument("--capture-workers", type=int, default=1)
    dev.set_defaults(handler=_dev)

    demo = commands.add_parser(
        "demo", help="start everything, fire sample alerts for two users, and show every screenshot taken"
    )
    demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the captures")
    demo.add_argument("--capture-workers", type=int, default=1)
    demo.add_argument("--stay", action="store_true", help="keep running after the table, for the viewer")
    demo.set_defaults(handler=_demo)

    user = commands.add_parser("user", help="manage users").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create a user and print its webhook URL once")
    create.add_argument("--plan", choices=("free", "basic", "pro", "premium"), default="free")
    create.add_argument("--external-id")
    create.add_argument("--chart", help="default TradingView chart layout id")
    create.add_argument("--sessionid", help="TradingView sessionid cookie")
    create.add_argument("--sessionid-sign", help="TradingView sessionid_sign cookie")
    create.set_defaults(handler=_user_create)

    keys = commands.add_parser("keys", help="TradingView cookie encryption keys (ALERTS_COOKIE_KEYS)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate = key_commands.add_parser(
        "rotate", help="re-encrypt every stored TradingView session with the first configured key"
    )
    rotate.add_argument("--batch-size", type=int, default=500, help="rows per transaction")
    rotate.set_defaults(handler=_keys_rotate)
    generate = key_commands.add_parser("generate", help="print a new '<key id>:<base64 key>' entry")
    generate.add_argument("key_id")
    generate.set_defaults(handler=_keys_generate)

    audit = commands.add_parser("audit", help="the webhook audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    prune = audit_commands.add_parser("prune", help="delete audit rows older than the retention period")
    prune.add_argument("--retention-days", type=int, help="default: ALERTS_AUDIT_RETENTION_DAYS (90)")
    prune.set_defaults(handler=_audit_prune)
    captures = commands.add_parser("captures", help="screenshot captures that failed")
    capture_commands = captures.add_subparsers(dest="captures_command", required=True)
    failed = capture_commands.add_parser("failed", help="list FAILED captures, newest first, with the reason")
    failed.add_argument("--user", help="only this user's (user id)")
    failed.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    failed.set_defaults(handler=_captures_failed)
    retry = capture_commands.add_parser("retry", help="put FAILED captures back on their queues")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", dest="all_failed", action="store_true", help="every FAILED capture")
    which.add_argument("signal_ids", nargs="*", default=[], metavar="SIGNAL_ID")
    retry.set_defaults(handler=_captures_retry)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = options.handler
    try:
        return handler(options) or 0
    except ConfigurationError as exc:
        # One line an operator reads in `kubectl logs` or `docker compose ps`, not a traceback.
        print(f"alerts: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
