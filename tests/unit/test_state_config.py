"""state:, cache: and limits: load into frozen settings; a Redis password is never shown."""

from __future__ import annotations

from pathlib import Path

from mini_llm.config import Cache, Limits, State, load_config

TABLE = """\
version: 1
state:
  redis: ${MINI_LLM_REDIS_URL:-}
cache: {enabled: true, ttl_s: 5}
providers:
  openai:
    base_url: https://api.openai.com/v1
    keys: sk-1234567890
    limits: {rpm: 500, tpm: 200000}
server:
  auth:
    keys:
      - {name: passy, key: gw-0123456789abcdef, limits: {rpm: 60}}
      - gw-fedcba9876543210
"""


def test_limits_state_and_cache_load(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(TABLE)
    url = "redis://:hunter2-secret-password@redis:6379/0"
    config = load_config(path, {"MINI_LLM_REDIS_URL": url})
    assert config.state == State(redis=url)
    assert "hunter2" not in repr(config.state) and "redis:6379/0" in repr(config.state)
    assert config.cache == Cache(enabled=True, ttl_s=5, max_entries=1000, max_body_bytes=1048576)
    assert config.providers["openai"].limits == Limits(rpm=500, tpm=200000)
    named, bare = config.server.auth.keys
    assert named.limits == Limits(rpm=60) and not bare.limits


def test_defaults_keep_everything_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\n")
    config = load_config(path, {})
    assert config.state.redis == "" and not config.cache.enabled
    path.write_text(TABLE)
    assert load_config(path, {}).state.redis == ""
