"""The Python SDK for parent applications: `mini-llm serve` as a supervised child process.

A product boundary: parents import it, so it imports neither aiohttp nor the gateway's own
modules, only mini_llm.contract (what both sides agree on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import GatewayConfigError, GatewayError, GatewayStartError
from .sync import Gateway

if TYPE_CHECKING:
    from .async_gateway import AsyncGateway

__all__ = ["AsyncGateway", "Gateway", "GatewayConfigError", "GatewayError", "GatewayStartError"]


def __getattr__(name: str) -> Any:
    # AsyncGateway lives in its own module so that sync parents never load the asyncio side.
    if name == "AsyncGateway":
        from .async_gateway import AsyncGateway

        return AsyncGateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
