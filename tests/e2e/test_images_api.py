"""/v1/images/generations through the official SDK with the sdxl-tiny-random fixture."""

import base64
import io
import time

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.mesh import Mesh

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def test_b64_json_returns_n_pngs_of_the_size(client: openai.OpenAI) -> None:
    response = client.images.generate(
        model="dall-e-3", prompt="a red bicycle", n=2, size="256x256", response_format="b64_json"
    )
    assert len(response.data) == 2
    images = [base64.b64decode(d.b64_json or "") for d in response.data]
    assert [png_size(image) for image in images] == [(256, 256), (256, 256)]
    # Two pictures of one request use different seeds.
    assert images[0] != images[1]


def test_url_serves_the_png_and_expires_by_name_only(mesh: Mesh, client: openai.OpenAI) -> None:
    response = client.images.generate(
        model="dall-e-2", prompt="a lighthouse", size="128x192", response_format="url"
    )
    url = response.data[0].url or ""
    assert url.startswith(mesh.base_url + "/images/files/")
    fetched = httpx.get(url, timeout=30)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert png_size(fetched.content) == (128, 192)
    # The file lives in the store; names that are not a stored image are 404 in OpenAI's error shape.
    assert any(mesh.image_store.glob("*.png"))
    missing = httpx.get(f"{mesh.base_url}/images/files/serve.log", timeout=30)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "image_not_found"
    # A path that climbs out of the store matches no route.
    climbing = httpx.get(f"{mesh.base_url}/images/files/..%2F..%2Fserve.log", timeout=30)
    assert climbing.status_code == 404 and "error" in climbing.json()


def test_same_seed_gives_identical_bytes(mesh: Mesh) -> None:
    body = {
        "model": "gpt-image-1",
        "prompt": "a mountain lake",
        "size": "128x128",
        "response_format": "b64_json",
        "seed": 42,
        "n": 2,
    }
    first = httpx.post(f"{mesh.base_url}/images/generations", json=body, timeout=120).json()
    second = httpx.post(f"{mesh.base_url}/images/generations", json=body, timeout=120).json()
    assert [d["b64_json"] for d in first["data"]] == [d["b64_json"] for d in second["data"]]
    assert first["seed"] == 42
    # Picture i of a request is reproducible alone with seed + i.
    alone = httpx.post(
        f"{mesh.base_url}/images/generations", json={**body, "n": 1, "seed": 43}, timeout=120
    ).json()
    assert alone["data"][0]["b64_json"] == first["data"][1]["b64_json"]
    other = httpx.post(f"{mesh.base_url}/images/generations", json={**body, "seed": 7}, timeout=120).json()
    assert other["data"][0]["b64_json"] != first["data"][0]["b64_json"]


def test_the_seed_designs_step_field_and_defaults(mesh: Mesh) -> None:
    started = time.monotonic()
    response = httpx.post(
        f"{mesh.base_url}/images/generations",
        json={"prompt": "a tree", "number_of_steps": 1, "response_format": "b64_json"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    # Without model and size: the first image model and its own default size, which OpenAI's schema does
    # not list for the response's `size`, so the field is left out.
    assert "size" not in response.json()
    assert png_size(base64.b64decode(response.json()["data"][0]["b64_json"])) == (256, 256)
    assert time.monotonic() - started < 60


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"size": "123x7"}, "size"),
        ({"size": "big"}, "size"),
        ({"size": "4096x4096"}, "size"),
        ({"n": 11}, "n"),
        ({"n": 0}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"extra_body": {"num_inference_steps": 1000}}, "num_inference_steps"),
        ({"extra_body": {"seed": -1}}, "seed"),
    ],
)
def test_bad_requests_are_400(client: openai.OpenAI, change: dict, param: str) -> None:
    body = {"model": "dall-e-3", "prompt": "a cat", "size": "256x256", **change}
    with pytest.raises(openai.BadRequestError) as raised:
        client.images.generate(**body)
    assert raised.value.status_code == 400
    error = raised.value.body
    assert isinstance(error, dict) and error["param"] == param, error


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.images.generate(model="no-such-painter", prompt="a cat")
