"""An unexpected error in any handler is a 500 in the client's error shape, never a bare one."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mini_llm.app import FRONT, create_app
from mini_llm.intake import Incoming

from ..helpers import MINIMAL, load


async def _broken(incoming: Incoming) -> web.Response:
    raise RuntimeError("secret internals sk-do-not-show-00000000")


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/messages/broken", "anthropic"), ("/v1/chat/broken", "openai")],
)
async def test_an_unexpected_error_is_a_500_in_the_clients_shape(
    tmp_path: object, path: str, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(load(tmp_path, MINIMAL))  # type: ignore[arg-type]
    app.router.add_get(path, app[FRONT].wrap(_broken))  # an endpoint that fails as a bug would
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        with caplog.at_level(logging.ERROR, logger="mini_llm"):
            response = await client.get(path, headers={"x-request-id": "req-500"})
            body = await response.json()
        assert response.status == 500
        assert response.headers["x-request-id"] == "req-500"
        assert response.content_type == "application/json"
        if shape == "anthropic":
            assert body["type"] == "error" and body["error"]["type"] == "api_error"
        else:
            assert body["error"]["type"] == "server_error"
            assert body["error"]["code"] == "internal_error"
        assert "sk-do-not-show" not in await response.text()
        assert "RuntimeError: secret internals" in caplog.text  # the traceback is logged
        # and the gateway keeps serving
        assert (await client.get("/health")).status == 200
