"""mini-llm: an embedded, routing-only LLM gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .sdk import AsyncGateway, Gateway, GatewayConfigError, GatewayError, GatewayStartError

__all__ = [
    "AsyncGateway",
    "Gateway",
    "GatewayConfigError",
    "GatewayError",
    "GatewayStartError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The SDK is for parent applications; `mini-llm serve` starts faster without it.
    if name in __all__:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'mini_llm' has no attribute {name!r}")
