"""Entry point: `python -m benchmarks [--duration S] [--connections N] [--only a,b] [--quick]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.run import Options, main


def parse(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="mini-llm vs direct, a floor proxy, nginx, LiteLLM and Portkey, in one run.",
    )
    parser.add_argument(
        "--duration", type=float, default=3.0, help="seconds per load phase (3; --quick: 2)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved load rounds; figures are medians, with min-max (3; --quick: 1)",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="concurrent connections, c=N (32)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma-separated contenders (direct and floor always run: every ratio needs them); "
        "known: direct, floor, mini-llm, mini-llm-wN, nginx, litellm, portkey",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="result file (benchmarks/results/bench-TIME.json)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short phases, one round, fewer samples (~1 min)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="also run `mini-llm serve --workers N` (2; 1: leave out)",
    )
    parser.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="never install LiteLLM/Portkey, use cached only",
    )
    parser.add_argument(
        "--install-timeout", type=float, default=600.0, help="seconds allowed per install (600)"
    )
    parser.add_argument(
        "--builtin-load",
        action="store_true",
        help="use the aiohttp load generator even if wrk exists",
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        help="also run mini-llm from this source tree as `mini-llm-alt` (A/B a hot-path change)",
    )
    args = parser.parse_args(argv)
    only = frozenset(n.strip() for n in args.only.split(",") if n.strip()) if args.only else None
    return Options(
        duration_s=2.0 if args.quick and args.duration == 3.0 else args.duration,
        rounds=1 if args.quick and args.rounds == 3 else max(1, args.rounds),
        connections=args.connections,
        only=only,
        json_path=args.json,
        quick=args.quick,
        workers=args.workers,
        install=args.install,
        install_timeout_s=args.install_timeout,
        builtin_load=args.builtin_load,
        alt_src=args.compare_src.resolve() if args.compare_src else None,
    )


if __name__ == "__main__":
    try:
        sys.exit(main(parse(sys.argv[1:])))
    except KeyboardInterrupt:
        sys.exit(130)
