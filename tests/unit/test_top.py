"""`mini-llm top`'s arithmetic: quantiles from buckets and rates between two scrapes."""

from __future__ import annotations

import math

import pytest
from rich.console import Console

from mini_llm.top import Scrape, parse, quantile, render, routes

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {0.1: 0.0, 0.2: 10.0, INF: 10.0}, 0.15),
        (0.5, {0.1: 10.0, 0.2: 10.0, INF: 10.0}, 0.05),
        (0.95, {0.1: 5.0, 0.2: 5.0, INF: 10.0}, 0.2),  # in +Inf: the highest finite bound
        (0.5, {0.1: 0.0, INF: 0.0}, None),
        (0.5, {}, None),
    ],
)
def test_quantile(q: float, buckets: dict[float, float], expected: float | None) -> None:
    found = quantile(q, buckets)
    assert found == expected if expected is None else found == pytest.approx(expected)


def exposition(ok: int, failed: int, fast: int, slow: int, tokens: int) -> str:
    labels = 'api="chat_completions",provider="openai",route="gpt-4o"'
    return f"""\
mini_llm_requests_total{{{labels},status="200"}} {ok}
mini_llm_requests_total{{{labels},status="502"}} {failed}
mini_llm_request_duration_seconds_bucket{{{labels},le="0.1"}} {fast}
mini_llm_request_duration_seconds_bucket{{{labels},le="1.0"}} {fast + slow}
mini_llm_request_duration_seconds_bucket{{{labels},le="+Inf"}} {fast + slow}
mini_llm_tokens_total{{model="gpt-4o",provider="openai",type="input"}} {tokens}
mini_llm_in_flight_requests 2
mini_llm_key_resting{{key="sk-…0001",provider="openai"}} 1
"""


def test_a_frame_from_two_scrapes() -> None:
    before = Scrape(10.0, parse(exposition(100, 5, 90, 15, 1000)), {})
    health = {
        "version": "0.1.0",
        "config": {"generation": 3, "last_error": None},
        "providers": {
            "openai": {
                "enabled": True,
                "key_states": [{"id": "sk-…0001", "state": "ok"}],
            }
        },
    }
    now = Scrape(12.0, parse(exposition(118, 7, 100, 25, 1600)), health)
    row = routes(now.samples, before.samples)["gpt-4o"]
    assert (row.requests, row.errors, row.providers) == (20, 2, {"openai"})
    console = Console(width=160, record=True)
    console.print(render("http://gw", before, now))
    text = console.export_text()
    assert "config generation 3" in text and "in flight 2" in text
    # 20 requests in 2 s, 2 of them failed; 10 of 20 under 100 ms, 10 between 0.1 and 1 s.
    assert "10.0" in text and "10%" in text and "100 ms" in text and "910 ms" in text
    assert "300.0" in text  # tokens/s
    assert "sk-…0001 resting" in text  # /health said ok; the metrics (any worker) say resting


def test_a_restarted_gateway_counts_from_zero() -> None:
    before = Scrape(0.0, parse(exposition(100, 0, 100, 0, 0)), {})
    now = Scrape(1.0, parse(exposition(3, 0, 3, 0, 0)), {})
    assert routes(now.samples, before.samples)["gpt-4o"].requests == 3
