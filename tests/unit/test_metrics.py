"""Metrics without a server: label values stay bounded, children are bound once."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mini_llm.metrics import Metrics, api_label, known_models
from mini_llm.proxy import Served
from mini_llm.routing import compile_routes
from mini_llm.usage import Usage

from ..helpers import load

TABLE = """\
version: 1
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-test-0000000000000000
    models: [listed]
routes:
  aliases:
    fast: openai:gpt-4o-mini
    smart: [openai:gpt-4o, openai:gpt-4o-mini]
  default: openai
"""


def test_api_labels() -> None:
    assert api_label("/v1/chat/completions") == "chat_completions"
    assert api_label("/v1/messages/count_tokens") == "messages_count_tokens"
    assert api_label("/v1/images/generations") == "images_generations"
    assert api_label("/v1/some/thing/new") == "other"
    assert api_label("/health") is None
    assert api_label("/metrics") is None


def test_known_models_are_the_ones_the_table_names(tmp_path: Path) -> None:
    table = compile_routes(load(tmp_path, TABLE))
    assert known_models(table) == {"gpt-4o-mini", "gpt-4o", "listed"}


def test_any_number_of_model_names_makes_a_few_series(tmp_path: Path) -> None:
    table = compile_routes(load(tmp_path, TABLE))
    metrics = Metrics(lambda: None, lambda: 0, shared=False)
    for i in range(500):
        served = Served(
            route=f"openai:random-{i}",
            provider="openai",
            tries=1,
            rule="default",
            upstream_model=f"random-{i}",
            usage=Usage(2, 1),
            outcomes=(("openai", "ok"),),
        )
        metrics.observe("chat_completions", 200, 0.01, 0.005, served, table)
    served = Served("openai:gpt-4o", "openai", None, 1, "fast", "gpt-4o", Usage(5, 6, 4))
    metrics.observe("chat_completions", 200, 0.01, 0.005, served, table)

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }
    tokens = {k[1]: v for k, v in samples.items() if k[0] == "mini_llm_tokens_total"}
    assert tokens == {
        (("model", "other"), ("provider", "openai"), ("type", "input")): 1000,
        (("model", "other"), ("provider", "openai"), ("type", "output")): 500,
        (("model", "other"), ("provider", "openai"), ("type", "cached_input")): 0,
        (("model", "gpt-4o"), ("provider", "openai"), ("type", "input")): 5,
        (("model", "gpt-4o"), ("provider", "openai"), ("type", "output")): 6,
        (("model", "gpt-4o"), ("provider", "openai"), ("type", "cached_input")): 4,
    }
    requests = {k[1]: v for k, v in samples.items() if k[0] == "mini_llm_requests_total"}
    assert requests == {
        (
            ("api", "chat_completions"),
            ("provider", "openai"),
            ("route", "default"),
            ("status", "200"),
        ): 500,
        (
            ("api", "chat_completions"),
            ("provider", "openai"),
            ("route", "fast"),
            ("status", "200"),
        ): 1,
    }
    assert len(metrics._series) == 2 and len(metrics._tokens) == 2
