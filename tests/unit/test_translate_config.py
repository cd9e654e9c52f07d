"""Provider settings for translation: format, drop_unsupported, default_max_tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from mini_llm.config import load_config
from mini_llm.source import ConfigError

from ..helpers import REPO


def write(tmp_path: Path, providers: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text("version: 1\nproviders:\n" + providers, encoding="utf-8")
    return path


def test_translation_settings_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "  a: {base_url: http://x, auth: none, format: anthropic, drop_unsupported: true,"
        " default_max_tokens: 100}\n",
    )
    provider = load_config(path, {}).providers["a"]
    assert provider.format == "anthropic"
    assert provider.drop_unsupported is True
    assert provider.default_max_tokens == 100


def test_translation_settings_default_to_no_translation(tmp_path: Path) -> None:
    provider = load_config(write(tmp_path, "  a: {base_url: http://x, auth: none}\n"), {})
    a = provider.providers["a"]
    assert (a.format, a.drop_unsupported, a.default_max_tokens) == (None, False, 4096)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ("format: gemini", "/providers/a/format"),
        ("default_max_tokens: 0", "/providers/a/default_max_tokens"),
        ("drop_unsupported: maybe", "/providers/a/drop_unsupported"),
    ],
)
def test_bad_translation_settings_are_located(tmp_path: Path, spec: str, where: str) -> None:
    path = write(tmp_path, f"  a: {{base_url: http://x, auth: none, {spec}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert [p.pointer for p in caught.value.problems] == [where]


def test_default_table_declares_every_provider_format() -> None:
    config = load_config(REPO / "mini-llm.yaml", {})
    # The builtin echo answers each format in its own, so it declares none.
    assert config.providers["echo"].builtin == "echo" and config.providers["echo"].format is None
    formats = {name: p.format for name, p in config.providers.items() if not p.builtin}
    assert formats.pop("anthropic") == "anthropic"
    assert set(formats.values()) == {"openai"}
