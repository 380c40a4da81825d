"""/v1/embeddings through the official SDK with the real all-MiniLM-L6-v2."""

import base64

import httpx
import numpy as np
import openai
import pytest

from tests.e2e.mesh import Mesh


def vectors(client: openai.OpenAI, texts: list[str], model: str = "text-embedding-3-small") -> np.ndarray:
    response = client.embeddings.create(model=model, input=texts)
    return np.array([d.embedding for d in response.data])


def test_similar_meanings_are_closer(client: openai.OpenAI) -> None:
    cat, dog, stocks = vectors(client, ["a cat", "a dog", "stock market"])
    assert cat @ dog > cat @ stocks
    assert np.allclose([np.linalg.norm(v) for v in (cat, dog, stocks)], 1.0, atol=1e-4)


def test_response_shape_usage_and_aliases(client: openai.OpenAI) -> None:
    response = client.embeddings.create(model="text-embedding-ada-002", input=["one", "two", "three"])
    assert response.model == "all-minilm-l6-v2"
    assert [d.index for d in response.data] == [0, 1, 2]
    assert all(len(d.embedding) == 384 for d in response.data)
    assert response.usage.prompt_tokens > 0 and response.usage.total_tokens == response.usage.prompt_tokens
    single = client.embeddings.create(model="all-minilm-l6-v2", input="one")
    assert np.allclose(single.data[0].embedding, response.data[0].embedding, atol=1e-5)


def test_base64_is_float32_of_the_right_length(mesh: Mesh, client: openai.OpenAI) -> None:
    raw = httpx.post(
        f"{mesh.base_url}/embeddings",
        json={"model": "text-embedding-3-small", "input": "a cat", "encoding_format": "base64"},
        timeout=60,
    ).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert decoded.shape == (384,)
    floats = client.embeddings.create(model="text-embedding-3-small", input="a cat").data[0].embedding
    assert np.allclose(decoded, floats, atol=1e-6)
    # The SDK asks for base64 by default and decodes it itself: the same vector arrives.
    assert np.allclose(vectors(client, ["a cat"])[0], floats, atol=1e-6)


def test_token_arrays_are_the_models_own_token_ids(client: openai.OpenAI) -> None:
    # all-MiniLM-L6-v2's BERT vocabulary: 1037 = "a", 4937 = "cat".
    from_ids = client.embeddings.create(model="all-minilm-l6-v2", input=[[1037, 4937]]).data[0].embedding
    from_text = client.embeddings.create(model="all-minilm-l6-v2", input="a cat").data[0].embedding
    assert np.allclose(from_ids, from_text, atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="all-minilm-l6-v2", input=[[10**9]])


def test_dimensions_shortens_and_renormalises_the_vector(client: openai.OpenAI) -> None:
    texts = ["a cat sat on the mat", "stock markets fell sharply"]
    full = np.array(
        [d.embedding for d in client.embeddings.create(model="text-embedding-3-small", input=texts).data]
    )
    short = client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=128).data
    vectors = np.array([d.embedding for d in short])
    assert vectors.shape == (2, 128)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    expected = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    assert np.allclose(vectors, expected, atol=1e-5)
    same = client.embeddings.create(model="text-embedding-3-small", input=texts, dimensions=384).data
    assert np.allclose([d.embedding for d in same], full, atol=1e-6)
    for impossible in (385, 0):
        with pytest.raises(openai.BadRequestError) as refused:
            client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=impossible)
        assert refused.value.body["param"] == "dimensions"


def test_invalid_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        client.embeddings.create(model="text-embedding-3-small", input=[""])
    assert empty.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as chat_model:
        client.embeddings.create(model="gpt-4", input="x")
    assert "all-minilm-l6-v2" in chat_model.value.body["message"]
    with pytest.raises(openai.BadRequestError) as embedding_model_for_chat:
        client.chat.completions.create(
            model="text-embedding-3-small", messages=[{"role": "user", "content": "x"}]
        )
    assert "smollm2-135m-instruct" in embedding_model_for_chat.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="no-such-embedder", input="x")
