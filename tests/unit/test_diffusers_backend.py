"""DiffusersBackend on the sdxl-tiny-random fixture: the loading and generation path of sdxl-turbo folders."""

import io
import json
import threading
import time
from pathlib import Path

import pytest
from PIL import Image
from transformers import CLIPTokenizer

from multai.fixtures.sdxl import build_sdxl_fixture
from multai.registry import read_manifest
from services.image.backends.base import FinishedImage, ImageRequest, StepDone
from services.image.backends.diffusers import DiffusersBackend

SDXL_TURBO_COMPONENTS = {
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
}

# Far more steps than the engine can run while a test reacts to the first one, so stopping early shows.
MANY_STEPS = 30


@pytest.fixture(scope="module")
def fixture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "sdxl-tiny-random"
    started = time.monotonic()
    build_sdxl_fixture(folder)
    assert time.monotonic() - started < 30
    return folder


@pytest.fixture(scope="module")
def backend(fixture_folder: Path):
    diffusers_backend = DiffusersBackend(read_manifest(fixture_folder))
    assert diffusers_backend.load(use_gpu=False, gpu_layers=0) > 0
    yield diffusers_backend
    diffusers_backend.unload()


def image_request(**changes) -> ImageRequest:
    fields = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "",
        "n": 1,
        "width": 64,
        "height": 64,
        "num_inference_steps": None,
        "guidance_scale": None,
        "seed": 1234,
    }
    return ImageRequest(**{**fields, **changes})


def generate(backend: DiffusersBackend, **changes) -> list[StepDone | FinishedImage]:
    return list(backend.generate(image_request(**changes), threading.Event()))


def pngs(events: list[StepDone | FinishedImage]) -> list[bytes]:
    return [event.png for event in events if isinstance(event, FinishedImage)]


def test_folder_has_sdxl_turbo_layout(fixture_folder):
    model_index = json.loads((fixture_folder / "model_index.json").read_text())
    assert model_index["_class_name"] == "StableDiffusionXLPipeline"
    assert {name: model_index[name] for name in SDXL_TURBO_COMPONENTS} == SDXL_TURBO_COMPONENTS
    for name in SDXL_TURBO_COMPONENTS:
        assert (fixture_folder / name).is_dir()
    for tokenizer in ("tokenizer", "tokenizer_2"):
        files = {path.name for path in (fixture_folder / tokenizer).iterdir()}
        assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= files
        assert "tokenizer.json" not in files
    scheduler = json.loads((fixture_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["timestep_spacing"] == "trailing"


def test_tokenizers_spell_any_prompt_without_unknown_tokens(fixture_folder):
    for name, pad_token in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        tokenizer = CLIPTokenizer.from_pretrained(str(fixture_folder / name))
        ids = tokenizer("Café au lait, 東京 ☀").input_ids
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.unk_token_id not in ids[1:-1]
        assert (tokenizer.pad_token, tokenizer.model_max_length) == (pad_token, 77)


def test_manifest_marks_a_complete_fixture(fixture_folder):
    manifest = read_manifest(fixture_folder)
    assert manifest.fixture
    assert (manifest.id, manifest.modality, manifest.backend) == ("sdxl-tiny-random", "image", "diffusers")
    assert manifest.aliases == ["dall-e-2", "dall-e-3", "gpt-image-1"]
    assert "unet/diffusion_pytorch_model.safetensors" in manifest.files
    assert manifest.size_bytes == sum((fixture_folder / name).stat().st_size for name in manifest.files)
    assert manifest.size_bytes < 5_000_000
    assert manifest.defaults == {"num_inference_steps": 2, "guidance_scale": 0.0, "width": 256, "height": 256}


def test_second_build_leaves_the_folder_alone(fixture_folder):
    before = (fixture_folder / "model.toml").stat().st_mtime_ns
    assert build_sdxl_fixture(fixture_folder) == fixture_folder
    assert (fixture_folder / "model.toml").stat().st_mtime_ns == before


def test_generate_before_load_is_an_error(fixture_folder):
    with pytest.raises(RuntimeError, match="before load"):
        generate(DiffusersBackend(read_manifest(fixture_folder)))


def test_non_numeric_manifest_default_is_reported(fixture_folder):
    manifest = read_manifest(fixture_folder)
    broken = DiffusersBackend(manifest.model_copy(update={"defaults": {"guidance_scale": "high"}}))
    broken.load(use_gpu=False, gpu_layers=0)
    with pytest.raises(ValueError, match=r"sdxl-tiny-random: defaults.guidance_scale must be a number"):
        generate(broken)


def test_png_has_the_requested_size(backend):
    [png] = pngs(generate(backend, width=256, height=192))
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (256, 192))


def test_steps_of_each_image_come_before_it_in_order(backend):
    events = generate(backend, n=2, seed=7)
    # The manifest's default of 2 steps applies when the request leaves them unset.
    assert [event for event in events if isinstance(event, StepDone)] == [
        StepDone(1, 2),
        StepDone(2, 2),
        StepDone(1, 2),
        StepDone(2, 2),
    ]
    assert [type(event) for event in events] == [StepDone, StepDone, FinishedImage] * 2
    finished = [event for event in events if isinstance(event, FinishedImage)]
    assert [(image.index, image.seed) for image in finished] == [(0, 7), (1, 8)]


def test_requested_steps_override_the_manifest_default(backend):
    steps = [event for event in generate(backend, num_inference_steps=3) if isinstance(event, StepDone)]
    assert steps == [StepDone(1, 3), StepDone(2, 3), StepDone(3, 3)]


def test_same_seed_gives_identical_bytes(backend):
    assert pngs(generate(backend, seed=99)) == pngs(generate(backend, seed=99))


def test_each_image_can_be_made_again_alone_from_its_seed(backend):
    first, second = pngs(generate(backend, n=2, seed=40))
    assert first != second
    assert pngs(generate(backend, seed=41)) == [second]


def test_different_seed_gives_different_bytes(backend):
    assert pngs(generate(backend, seed=1)) != pngs(generate(backend, seed=2))


def test_negative_prompt_steers_guided_generation(backend):
    plain = pngs(generate(backend, guidance_scale=5.0))
    steered = pngs(generate(backend, guidance_scale=5.0, negative_prompt="blurry, low quality"))
    assert len(steered) == 1
    assert steered != plain


def test_cancelled_request_yields_nothing(backend):
    cancel = threading.Event()
    cancel.set()
    assert list(backend.generate(image_request(n=2), cancel)) == []


@pytest.fixture
def engine_calls(backend):
    """Counts the UNet's denoising passes and the VAE's decodes, to see where a cancelled call stopped."""
    calls = {"unet": 0, "vae_decode": 0}
    pipeline = backend._pipeline

    def count(name: str):
        def hook(*_: object) -> None:
            calls[name] += 1

        return hook

    handles = [
        pipeline.unet.register_forward_hook(count("unet")),
        pipeline.vae.decoder.register_forward_hook(count("vae_decode")),
    ]
    yield calls
    for handle in handles:
        handle.remove()


def test_uncancelled_image_runs_every_step_and_decodes(backend, engine_calls):
    generate(backend, num_inference_steps=4)
    assert engine_calls == {"unet": 4, "vae_decode": 1}


def test_cancelling_mid_image_stops_without_decoding(backend, engine_calls):
    cancel = threading.Event()
    events = []
    for event in backend.generate(image_request(n=2, num_inference_steps=MANY_STEPS), cancel):
        events.append(event)
        cancel.set()
    assert events == [StepDone(1, MANY_STEPS)]
    # The engine finishes the step it is in when the cancel comes, then stops without decoding.
    assert engine_calls["unet"] < MANY_STEPS
    assert engine_calls["vae_decode"] == 0


def test_cancelling_after_an_image_skips_the_rest(backend, engine_calls):
    cancel = threading.Event()
    events = []
    for event in backend.generate(image_request(n=3), cancel):
        events.append(event)
        if isinstance(event, FinishedImage):
            cancel.set()
    assert len(pngs(events)) == 1
    assert engine_calls["vae_decode"] == 1


def test_closing_the_stream_early_waits_for_the_pipeline_to_stop(backend, engine_calls):
    stream = backend.generate(image_request(num_inference_steps=MANY_STEPS), threading.Event())
    assert next(stream) == StepDone(1, MANY_STEPS)
    stream.close()
    assert engine_calls["unet"] < MANY_STEPS
    assert engine_calls["vae_decode"] == 0
    assert not any(thread.name.startswith("diffusers-") for thread in threading.enumerate())
