"""dfkd serve | worker | migrate | distill."""

from __future__ import annotations

import argparse
import logging
import sys

from cli import distill as distill_command
from cli import keys as keys_command
from cli import record_metadata as record_metadata_command
from cli import secret_keys as secrets_command
from cli import tenants as tenants_command
from cli import toy as toy_command


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from service.migrate import upgrade_to_head
    from service.queue import InProcessJobQueue
    from service.settings import get_settings
    from worker.embedded import EmbeddedRunner, new_wakeup

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if not settings.require_api_keys:
        logging.getLogger("dfkd").warning(
            "running OPEN: requests without an API key act as the default tenant; "
            "set DFKD_REQUIRE_API_KEYS=true on anything reachable from a network"
        )
    if settings.resolved_database_url.startswith("sqlite") or args.migrate:
        upgrade_to_head(settings.resolved_database_url)
    runner = None
    if settings.uses_embedded_runner:
        queue = InProcessJobQueue(new_wakeup())
        app = create_app(settings, queue=queue)
        runner = EmbeddedRunner(settings, queue.wakeup, settings.runner_processes)
        runner.start()
    else:
        app = create_app(settings)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, log_config=None)
    finally:
        if runner is not None:
            runner.stop()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from service.settings import get_settings

    settings = get_settings()
    if not settings.broker_url:
        print("dfkd worker needs DFKD_BROKER_URL (e.g. redis://127.0.0.1:6379/0)", file=sys.stderr)
        return 2
    from worker.celery_worker import app

    argv = [
        "worker",
        "-Q",
        args.queue or settings.celery_queue,
        "-c",
        str(args.concurrency),
        "--loglevel",
        args.log_level.upper(),
    ]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from service.migrate import upgrade_to_head
    from service.settings import get_settings

    upgrade_to_head(get_settings().resolved_database_url)
    print("database is at the latest schema")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfkd", description="Data-free knowledge distillation.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the API (and, with no broker, the embedded runner)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--migrate", action="store_true", help="upgrade the database schema first")
    serve.set_defaults(handler=_serve)

    worker = commands.add_parser("worker", help="run a Celery worker (one process per GPU)")
    worker.add_argument(
        "--queue", default=None, help="queue to consume (default DFKD_CELERY_QUEUE)"
    )
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--hostname", default=None)
    worker.add_argument("--log-level", default="info")
    worker.set_defaults(handler=_worker)

    migrate = commands.add_parser("migrate", help="upgrade the database to the latest schema")
    migrate.set_defaults(handler=_migrate)

    distill_command.add_parser(commands)
    keys_command.add_parser(commands)
    secrets_command.add_parser(commands)
    record_metadata_command.add_parser(commands)
    tenants_command.add_parser(commands)
    toy_command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from service.logs import configure_logging
    from service.settings import get_settings

    # the CLI's own tools (distill, keys, ...) talk to a person; the long-running processes log JSON
    configure_logging(get_settings().log_format if args.command in {"serve", "worker"} else "text")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
