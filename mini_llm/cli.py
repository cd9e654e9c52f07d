"""The mini-llm command and its subcommands: parses flags, calls the library."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, find_config, load_config
from .contract import EXIT_INTERNAL, EXIT_INVALID, EXIT_OK, WORKER_VARIABLE
from .metrics_dir import drop_inherited
from .source import ConfigError

if TYPE_CHECKING:
    from rich.console import Console


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mini-llm",
        description="An embedded, routing-only LLM gateway driven by one YAML routing table.",
    )
    parser.add_argument("--version", action="version", version=f"mini-llm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    config_help = "routing table (default: $MINI_LLM_CONFIG, else ./mini-llm.yaml, else built-in)"

    serve = commands.add_parser("serve", help="serve the routing table over HTTP")
    serve.add_argument("-c", "--config", metavar="PATH", help=config_help)
    serve.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, help="port to bind, 0 for any (default: server.port, 3333)"
    )
    serve.add_argument(
        "--log-requests",
        action="store_true",
        default=None,
        help="one access line per request on stderr (keys masked)",
    )
    serve.add_argument(
        "--no-reload",
        dest="reload",
        action="store_false",
        default=None,
        help="do not watch the routing table for changes",
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="processes sharing the port (SO_REUSEPORT) (default: 1)",
    )

    check = commands.add_parser("check-config", help="validate the routing table and summarise it")
    check.add_argument("-c", "--config", metavar="PATH", help=config_help)
    check.add_argument("--json", action="store_true", help="print the facts as one JSON document")

    route = commands.add_parser("route", help="explain how a model name resolves")
    route.add_argument("model", metavar="MODEL")
    route.add_argument("-c", "--config", metavar="PATH", help=config_help)
    route.add_argument(
        "--path",
        default="/v1/chat/completions",
        help="request path to build the URL for (default: /v1/chat/completions)",
    )
    route.add_argument("--json", action="store_true", help="print the facts as one JSON document")

    url_help = "the gateway (default: $MINI_LLM_URL, else http://127.0.0.1:3333)"
    health = commands.add_parser("health", help="show a running gateway's /health as tables")
    health.add_argument("--url", help=url_help)
    health.add_argument("--json", action="store_true", help="print /health as JSON")

    smoke = commands.add_parser(
        "smoke", help="send a small and a streamed request to every model of a gateway"
    )
    where = smoke.add_mutually_exclusive_group()
    where.add_argument("--url", help=url_help)
    where.add_argument(
        "-c", "--config", metavar="PATH", help="start a gateway on this table for the run"
    )
    smoke.add_argument(
        "--models", metavar="A,B", help="models to try (default: every model /v1/models lists)"
    )
    smoke.add_argument("--json", action="store_true", help="print the results as JSON")
    smoke.add_argument(
        "--timeout", type=float, default=60.0, metavar="S", help="per request (default: 60)"
    )

    chat = commands.add_parser("chat", help="stream answers from a model to the terminal")
    chat.add_argument("model", metavar="MODEL")
    chat.add_argument(
        "prompt", metavar="PROMPT", nargs="?", help="one message (default: a conversation on stdin)"
    )
    chat.add_argument(
        "--api",
        choices=("openai", "anthropic"),
        help="API shape (default: anthropic for claude* models, else openai)",
    )
    chat.add_argument("--system", metavar="S", help="system prompt")
    chat.add_argument("--url", help=url_help)
    chat.add_argument(
        "--max-tokens",
        type=_positive,
        metavar="N",
        help="longest answer (default: 1024 for Anthropic, the provider's own for OpenAI)",
    )

    top = commands.add_parser("top", help="a live view of a running gateway (/metrics, /health)")
    top.add_argument("--url", help=url_help)
    top.add_argument(
        "--once", action="store_true", help="print one frame and exit (as when not a terminal)"
    )
    top.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="S", help="seconds between looks (1)"
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not 0 < value < 3600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than 3600, not {value}")
    return value


def _load(path_arg: str | None, *, as_json: bool) -> Config | None:
    env = dict(os.environ)
    path = find_config(path_arg, env)
    try:
        return load_config(path, env)
    except ConfigError as exc:
        if as_json:
            doc = {
                "valid": False,
                "path": str(path),
                "errors": [p.as_dict() for p in exc.problems],
                "warnings": [],
            }
            print(json.dumps(doc, indent=2, ensure_ascii=False))
        else:
            # Plain print: one problem per line, never wrapped, so tools can parse it.
            for problem in exc.problems:
                print(problem)
            print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return None


def check_config(path_arg: str | None, *, as_json: bool) -> int:
    config = _load(path_arg, as_json=as_json)
    if config is None:
        return EXIT_INVALID
    from .report import config_facts, print_config

    facts = config_facts(config)
    if as_json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
        return EXIT_OK
    for warning in config.warnings:
        print(warning)
    print_config(_console(), facts)
    print(f"{config.path}: valid")
    return EXIT_OK


def route(model: str, path_arg: str | None, request_path: str, *, as_json: bool) -> int:
    config = _load(path_arg, as_json=as_json)
    if config is None:
        return EXIT_INVALID
    from .report import print_route, route_facts
    from .routing import compile_routes

    facts = route_facts(compile_routes(config), model, request_path)
    if as_json:
        print(json.dumps(facts, indent=2, ensure_ascii=False))
    else:
        print_route(_console(), facts)
    return EXIT_OK if facts["resolved"] else EXIT_INVALID


def _console() -> Console:
    from rich.console import Console

    # Not a terminal (a pipe, a test): do not wrap tables at 80 columns.
    # emoji=False: a model name like `a:smile:b` is text.
    return Console(width=None if sys.stdout.isatty() else 160, highlight=False, emoji=False)


def _client_command(args: argparse.Namespace) -> int:
    if args.command == "top":
        from .top import run

        return run(args.url, once=args.once, interval=args.interval)
    if args.command == "chat":
        from .client import chat

        return chat(
            args.model,
            args.prompt,
            api=args.api,
            system=args.system,
            url=args.url,
            max_tokens=args.max_tokens,
        )
    from .checkup import health, smoke

    if args.command == "health":
        return health(args.url, as_json=args.json, console=_console())
    try:
        return smoke(
            args.url,
            args.config,
            args.models,
            as_json=args.json,
            timeout_s=args.timeout,
            console=_console(),
        )
    except KeyboardInterrupt:
        from .client import EXIT_INTERRUPTED

        print("mini-llm: smoke test interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command != "serve":
        # A masked key (`sk-…abcd`) must not crash a terminal that cannot show `…`.
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(errors="replace")
    if args.command in ("health", "smoke", "chat", "top"):
        try:
            return _client_command(args)
        except BrokenPipeError:  # `mini-llm chat m hi | head -c 10`: the reader left
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1  # what Python itself exits with on EPIPE
    if args.command in ("check-config", "route"):
        try:
            if args.command == "check-config":
                return check_config(args.config, as_json=args.json)
            return route(args.model, args.config, args.path, as_json=args.json)
        except BrokenPipeError:  # `mini-llm check-config | head`: the reader left
            # Python's own flush of stdout at exit would fail again, noisily.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1  # what Python itself exits with on EPIPE
        except Exception as exc:  # never a traceback, and never a value that may be a key
            print(
                f"mini-llm: internal error ({type(exc).__name__}); please report it",
                file=sys.stderr,
            )
            return EXIT_INTERNAL
    # Before prometheus_client is imported: it reads this variable once, on import.
    drop_inherited(os.environ, worker=os.environ.get(WORKER_VARIABLE) == "1")
    try:
        from .server import serve
    except Exception:  # a broken install must not exit 1, which means "invalid table"
        traceback.print_exc()
        return EXIT_INTERNAL
    return serve(
        args.config,
        host=args.host,
        port=args.port,
        log_requests=args.log_requests,
        reload=args.reload,
        workers=args.workers,
    )


if __name__ == "__main__":
    sys.exit(main())
