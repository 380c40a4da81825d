"""LlavaBackend on the llava-tiny-random fixture: the loading and generation path of real llava-1.5."""

import io
import json
import shutil
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoProcessor

from multai.errors import InvalidRequestError
from multai.fixtures.llava import FIXTURE_MAX_TOKENS, IMAGE_TOKENS, build_llava_fixture
from multai.registry import read_manifest
from services.vision.backends.base import VisionDone, VisionSampling, VisionTurn
from services.vision.backends.llava import LlavaBackend, conversation_for_template

QUESTION = "What is in this picture?"


def encoded_image(image_format: str, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buffer, format=image_format)
    return buffer.getvalue()


def greedy(max_tokens: int, stop: list[str] | None = None) -> VisionSampling:
    return VisionSampling(max_tokens=max_tokens, temperature=0, top_p=None, seed=None, stop=stop or [])


def sampled(seed: int, max_tokens: int = 12) -> VisionSampling:
    return VisionSampling(max_tokens=max_tokens, temperature=1.0, top_p=0.9, seed=seed, stop=[])


def ask(*parts: str | bytes) -> list[VisionTurn]:
    return [VisionTurn("user", list(parts))]


def run(backend: LlavaBackend, turns: list[VisionTurn], sampling: VisionSampling) -> tuple[str, VisionDone]:
    events = list(backend.generate(turns, sampling, threading.Event()))
    done = events.pop()
    assert isinstance(done, VisionDone)
    assert all(isinstance(event, str) and event for event in events)
    return "".join(str(event) for event in events), done


@pytest.fixture(scope="module")
def fixture_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "llava-tiny-random"
    started = time.monotonic()
    build_llava_fixture(folder)
    assert time.monotonic() - started < 30
    return folder


@pytest.fixture(scope="module")
def backend(fixture_folder: Path):
    llava = LlavaBackend(read_manifest(fixture_folder))
    assert llava.load(use_gpu=False, gpu_layers=0) > 0
    yield llava
    llava.unload()


def test_folder_has_the_layout_of_llava_1_5_7b_hf(fixture_folder):
    config = json.loads((fixture_folder / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["text_config"]["model_type"] == "llama"
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert (config["vision_feature_layer"], config["vision_feature_select_strategy"]) == (-2, "default")
    processor = json.loads((fixture_folder / "processor_config.json").read_text())
    assert processor["processor_class"] == "LlavaProcessor" and processor["image_token"] == "<image>"
    preprocessor = json.loads((fixture_folder / "preprocessor_config.json").read_text())
    assert preprocessor["image_processor_type"] == "CLIPImageProcessor"
    manifest = read_manifest(fixture_folder)
    assert {"model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(
        manifest.files
    )
    assert any(name.startswith("chat_template.") for name in manifest.files)


def test_manifest_marks_a_complete_fixture(fixture_folder):
    manifest = read_manifest(fixture_folder)
    assert manifest.fixture
    assert (manifest.id, manifest.modality, manifest.backend) == ("llava-tiny-random", "vision", "llava")
    assert manifest.aliases == ["gpt-4o", "gpt-4-vision-preview"]
    assert manifest.size_bytes == sum((fixture_folder / name).stat().st_size for name in manifest.files)
    assert manifest.defaults["max_tokens"] == FIXTURE_MAX_TOKENS


def test_prompts_follow_llava_1_5s_template(fixture_folder):
    processor = AutoProcessor.from_pretrained(str(fixture_folder), local_files_only=True)
    turns = [
        VisionTurn("user", [QUESTION, encoded_image("PNG")]),
        VisionTurn("assistant", ["A red square."]),
        VisionTurn("user", ["And now?", encoded_image("GIF"), encoded_image("JPEG")]),
    ]
    messages, images = conversation_for_template(turns)
    assert len(images) == 3 and all(image.mode == "RGB" for image in images)
    # As in llava-1.5: a turn's images come first, each on its own line.
    assert processor.apply_chat_template(messages, add_generation_prompt=True) == (
        f"USER: <image>\n{QUESTION} ASSISTANT: A red square. USER: <image>\n<image>\nAnd now? ASSISTANT:"
    )


def test_second_build_leaves_the_folder_alone(fixture_folder):
    before = (fixture_folder / "model.toml").stat().st_mtime_ns
    assert build_llava_fixture(fixture_folder) == fixture_folder
    assert (fixture_folder / "model.toml").stat().st_mtime_ns == before


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "GIF"])
def test_streams_text_about_an_image(backend, image_format):
    text, done = run(backend, ask(QUESTION, encoded_image(image_format)), greedy(8))
    assert text.strip()
    assert done == VisionDone("length", done.prompt_tokens, 8)


def test_each_image_adds_its_tokens_to_the_prompt(backend):
    _, text_only = run(backend, ask(QUESTION), greedy(1))
    _, one = run(backend, ask(QUESTION, encoded_image("PNG")), greedy(1))
    text, two = run(
        backend, ask(encoded_image("PNG"), QUESTION, encoded_image("JPEG", (0, 90, 200))), greedy(4)
    )
    # "<image>\n" becomes IMAGE_TOKENS placeholders plus the newline.
    assert one.prompt_tokens == text_only.prompt_tokens + IMAGE_TOKENS + 1
    assert two.prompt_tokens == one.prompt_tokens + IMAGE_TOKENS + 1
    assert text and two.completion_tokens == 4


def test_a_conversation_with_system_and_assistant_turns(backend):
    turns = [
        VisionTurn("system", ["Answer briefly."]),
        VisionTurn("user", [QUESTION, encoded_image("PNG")]),
        VisionTurn("assistant", ["A red square."]),
        VisionTurn("user", ["And its shade?"]),
    ]
    text, done = run(backend, turns, greedy(3))
    assert text and done.finish_reason == "length" and done.completion_tokens == 3


def test_max_tokens_defaults_to_the_manifest(backend):
    unbounded = VisionSampling(max_tokens=None, temperature=0, top_p=None, seed=None, stop=[])
    text, done = run(backend, ask(QUESTION, encoded_image("PNG")), unbounded)
    assert text and (done.finish_reason, done.completion_tokens) == ("length", FIXTURE_MAX_TOKENS)


def test_greedy_replies_repeat(backend):
    turns = ask(QUESTION, encoded_image("PNG"))
    assert run(backend, turns, greedy(10)) == run(backend, turns, greedy(10))


def test_same_seed_gives_the_same_text_and_other_seeds_differ(backend):
    turns = ask(QUESTION, encoded_image("JPEG"))
    first, second = run(backend, turns, sampled(7)), run(backend, turns, sampled(7))
    assert first == second
    assert {run(backend, turns, sampled(seed))[0] for seed in (1, 2, 3)} != {first[0]}


def test_top_k_of_one_samples_the_greedy_reply(backend):
    turns = ask(QUESTION, encoded_image("PNG"))
    greedy_text = run(backend, turns, greedy(12))[0]
    top_one = replace(sampled(5), top_k=1, top_p=1.0)
    assert {run(backend, turns, replace(top_one, seed=seed))[0] for seed in (1, 2)} == {greedy_text}


def test_repeat_penalty_changes_the_greedy_reply(backend):
    turns = ask(QUESTION, encoded_image("PNG"))
    plain = run(backend, turns, greedy(16))[0]
    assert run(backend, turns, replace(greedy(16), repeat_penalty=1.0))[0] == plain
    assert run(backend, turns, replace(greedy(16), repeat_penalty=20.0))[0] != plain


def test_stop_sequence_cuts_the_reply(backend):
    turns = ask(QUESTION, encoded_image("PNG"))
    full, _ = run(backend, turns, greedy(10))
    stop = full[4:6]
    text, done = run(backend, turns, greedy(10, stop=[stop]))
    assert text == full[: full.index(stop)]
    assert done.finish_reason == "stop" and done.completion_tokens <= 6


def test_a_stop_sequence_that_never_comes_changes_nothing(backend):
    turns = ask(QUESTION, encoded_image("PNG"))
    full, _ = run(backend, turns, greedy(10))
    # Its first character does occur, so the backend holds text back and must give it out at the end.
    text, done = run(backend, turns, greedy(10, stop=[full[-1] + "\u2603"]))
    assert (text, done.finish_reason, done.completion_tokens) == (full, "length", 10)


def test_end_of_sequence_ends_the_reply_with_stop(fixture_folder, tmp_path):
    # A copy that may write </s>, and must as the last token the length allows.
    folder = shutil.copytree(fixture_folder, tmp_path / "llava-eos")
    generation = json.loads((folder / "generation_config.json").read_text())
    generation["suppress_tokens"].remove(generation["eos_token_id"])
    generation["forced_eos_token_id"] = generation["eos_token_id"]
    (folder / "generation_config.json").write_text(json.dumps(generation))
    llava = LlavaBackend(read_manifest(folder))
    llava.load(use_gpu=False, gpu_layers=0)
    text, done = run(llava, ask(QUESTION, encoded_image("PNG")), greedy(5))
    llava.unload()
    # The end-of-sequence token is neither text nor counted.
    assert "</s>" not in text
    assert done.finish_reason == "stop" and done.completion_tokens < 5


def test_cancel_stops_generation(backend):
    cancel = threading.Event()
    events = []
    for event in backend.generate(ask(QUESTION, encoded_image("PNG")), greedy(500), cancel):
        events.append(event)
        cancel.set()
    done = events[-1]
    assert isinstance(done, VisionDone) and done.finish_reason == "stop"
    assert done.completion_tokens < 20


def test_a_reader_that_leaves_early_stops_the_worker(backend):
    replies = backend.generate(ask(QUESTION, encoded_image("PNG")), greedy(500), threading.Event())
    assert isinstance(next(replies), str)
    started = time.monotonic()
    replies.close()
    assert time.monotonic() - started < 5
    assert not any(thread.name.startswith("generate-") for thread in threading.enumerate())


@pytest.mark.parametrize(
    "data",
    [b"these bytes are not a picture", encoded_image("PNG")[:60], encoded_image("BMP")],
    ids=["garbage", "truncated-png", "bmp"],
)
def test_undecodable_images_are_client_errors(backend, data):
    with pytest.raises(InvalidRequestError) as raised:
        run(backend, ask(QUESTION, encoded_image("PNG"), data), greedy(2))
    assert raised.value.param == "messages"
    assert "image 2" in raised.value.message


def test_max_tokens_below_one_is_a_client_error(backend):
    with pytest.raises(InvalidRequestError) as raised:
        run(backend, ask(QUESTION), greedy(0))
    assert raised.value.param == "max_tokens"


def test_a_prompt_longer_than_the_context_is_a_client_error(backend):
    with pytest.raises(InvalidRequestError) as raised:
        run(backend, ask("word " * 300, encoded_image("PNG")), greedy(2))
    assert raised.value.param == "messages" and "tokens" in raised.value.message
