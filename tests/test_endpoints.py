"""models.list and embeddings.create: the same pipeline as chat (retries, errors, logging)."""

from __future__ import annotations

import array
import base64

import pytest

import asyncchat
from asyncchat.testing import MockResponse, MockServer, MockTransport, mock_embedding

from .conftest import API_KEY


async def test_models_list(server: MockServer) -> None:
    server.models = ["glm-4-air", "glm-4-flash"]
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        models = await client.models.list()
    assert [model.id for model in models.data] == ["glm-4-air", "glm-4-flash"]
    assert models.data[0].owned_by == "asyncchat"
    request = server.requests[0]
    assert request.method == "GET" and request.path == "/v1/models"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert "Content-Type" not in request.headers and request.raw_body == b""


async def test_models_list_errors_and_retries() -> None:
    answers = [
        MockResponse(503, json={"error": {"message": "busy"}}, headers={"Retry-After": "0"}),
        MockResponse(json={"object": "list", "data": [{"id": "m1"}]}),
        MockResponse(401, json={"error": {"message": "bad key"}}),
    ]
    transport = MockTransport(lambda request: answers.pop(0))
    async with asyncchat.Client(
        base_url="https://x.example/v1", api_key="k", transport=transport
    ) as client:
        assert [m.id for m in (await client.models.list()).data] == ["m1"]
        with pytest.raises(
            asyncchat.AuthenticationError, match=r"HTTP 401 from GET https://x\.example/v1/models"
        ):
            await client.models.list()
    assert [r.method for r in transport.requests] == ["GET", "GET", "GET"]


@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
async def test_embeddings(server: MockServer, encoding_format: str | None) -> None:
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        result = await client.embeddings.create(
            model="embedding-3", input=["one text", "another"], dimensions=16, **extra
        )
    assert [item.index for item in result.data] == [0, 1]
    assert result.data[0].embedding == mock_embedding("one text", 16)
    assert result.data[1].embedding == mock_embedding("another", 16)
    assert result.model == "embedding-3"
    assert result.usage is not None and result.usage.total_tokens == 3
    body = server.requests[0].body
    assert body["input"] == ["one text", "another"] and body["dimensions"] == 16


def test_base64_embeddings_decode_to_the_same_floats() -> None:
    floats = [0.5, -1.25, 3.0, 1e-3]
    encoded = base64.b64encode(array.array("f", floats).tobytes()).decode()
    item = asyncchat.types.Embedding({"index": 0, "embedding": encoded})
    assert item.embedding == pytest.approx(floats, rel=1e-6)
    assert asyncchat.types.Embedding({"embedding": floats}).embedding == floats
    assert asyncchat.types.Embedding({"embedding": None}).embedding == []


async def test_embeddings_bad_arguments(server: MockServer) -> None:
    async with asyncchat.Client(base_url=server.base_url, api_key=API_KEY) as client:
        with pytest.raises(TypeError, match="model"):
            await client.embeddings.create(model="", input="x")
        with pytest.raises(ValueError, match="input"):
            await client.embeddings.create(model="m", input=[])
    assert server.requests == []
