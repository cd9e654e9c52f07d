"""mini-llm: an embedded, routing-only LLM gateway."""

from __future__ import annotations

__version__ = "0.1.0"
