"""`multai models`: list the installed models, install the bundled ones, add any model or LoRA adapter from
its files, remove one (never while the scheduler has it loaded, unless forced)."""

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

import grpc

from multai.bundled_models import ALL_MODELS, install_bundled
from multai.mesh_tls import MeshChannels
from multai.model_import import ModelImportError, add_model, find_installed
from multai.openai_objects import DEVICE_NAMES
from multai.registry import ModelRegistry
from multai.scheduler_client import fetch_status
from multai.settings import MultaiSettings


def megabytes(size: int) -> str:
    """A size for tables, in MB."""
    return f"{size / 1e6:.0f} MB"


def add_models_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `models` and its subcommands to the `multai` parser."""
    models = commands.add_parser("models", help="list, install, add and remove models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="the models installed in the models folder")
    install = model_commands.add_parser("install", help="install the bundled default models")
    install.add_argument("names", nargs="*", help=f"which ones (default: all of {', '.join(ALL_MODELS)})")
    add = model_commands.add_parser(
        "add",
        help="add a GGUF file, a LoRA GGUF (with --base) or a folder of diffusers, LLaVA, Bark, "
        "sentence-transformers, Whisper (CTranslate2) or Piper",
    )
    add.add_argument("path", type=Path)
    add.add_argument("--base", help="for a LoRA adapter: the id of the installed model it adapts")
    add_lora = model_commands.add_parser("add-lora", help="add a GGUF LoRA adapter of an installed model")
    add_lora.add_argument("path", type=Path)
    add_lora.add_argument("--base", required=True, help="the id of the installed model it adapts")
    for sub in (add, add_lora):
        sub.add_argument(
            "--id", dest="model_id", help="the model's id (default: from the file or folder name)"
        )
        sub.add_argument("--alias", action="append", default=[], help="another name for it (repeatable)")
        sub.add_argument(
            "--scale", type=float, default=1.0, help="for a LoRA adapter: its weight (default: 1.0)"
        )
    remove = model_commands.add_parser("remove", help="delete a model's folder")
    remove.add_argument("model", help="its id or an alias")
    remove.add_argument(
        "--force", action="store_true", help="remove it even while the scheduler has it loaded"
    )
    remove.add_argument("--scheduler-address", help="host:port of the scheduler (default: settings)")
    remove.add_argument(
        "--certs-dir", help="certs folder (default: MULTAI_CERTS_DIR, else MULTAI_STATE_DIR/certs)"
    )
    for sub in (listing, install, add, add_lora, remove):
        sub.add_argument("--models-dir", help="folder of model folders (default: MULTAI_MODELS_DIR)")


def format_models(registry: ModelRegistry) -> str:
    """The installed models as a table; adapters name their base."""
    lines = ["MODEL                         MODALITY  BACKEND                SIZE       ALIASES"]
    for m in registry.models():
        notes = [*([", ".join(m.aliases)] if m.aliases else []), *(["(fixture)"] if m.fixture else [])]
        if m.base:
            notes.append(f"(adapter of {m.base}, scale {m.scale:g})")
        lines.append(
            f"{m.id:<29} {m.modality:<9} {m.backend:<22} {megabytes(m.size_bytes):<10} {' '.join(notes)}"
        )
    return "\n".join(lines)


def resident_where(settings: MultaiSettings, model: str) -> str | None:
    """Where the scheduler has the model loaded ("cpu by chat"), None when it has not or no mesh runs."""
    try:
        status = asyncio.run(fetch_status(MeshChannels.from_settings(settings), settings.scheduler_address))
    except FileNotFoundError:
        return None  # no certificates: no mesh was ever started with this state folder
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return None  # no scheduler answers: nothing is loaded
        raise
    for resident in status.resident_models:
        if resident.model == model:
            return f"{DEVICE_NAMES.get(resident.device, 'a device')} by the {resident.service} service"
    return None


def remove_model(settings: MultaiSettings, name: str, force: bool) -> Path:
    """Deletes an installed model's folder; refuses while it is loaded (unless forced) or adapters use it."""
    manifest = find_installed(settings.models_dir, name)
    dependents = [m.id for m in ModelRegistry.scan(settings.models_dir).adapters_of(manifest.id)]
    if dependents:
        raise ModelImportError(
            f"{manifest.id} is the base of the adapters {', '.join(dependents)}; remove them first"
        )
    if not force:
        where = resident_where(settings, manifest.id)
        if where is not None:
            raise ModelImportError(
                f"{manifest.id} is loaded ({where} at {settings.scheduler_address}); stop the mesh or wait "
                "for it to be unloaded, or pass --force"
            )
    shutil.rmtree(manifest.folder)
    return manifest.folder


def run_models_command(args: argparse.Namespace, settings: MultaiSettings) -> None:
    """Runs one `multai models` subcommand; a refusal exits with its reason."""
    command = args.models_command
    try:
        if command == "list":
            print(format_models(ModelRegistry.scan(settings.models_dir)))
        elif command == "install":
            for folder in install_bundled(settings.models_dir, args.names or None):
                print(f"installed {folder.name} in {folder}")
        elif command in ("add", "add-lora"):
            folder = add_model(
                settings.models_dir, args.path, args.model_id, args.alias, args.base, args.scale
            )
            print(f"added {folder.name} in {folder}; a running mesh serves it within a few seconds")
        else:
            folder = remove_model(settings, args.model, args.force)
            print(f"removed {folder.name} ({folder})")
    except ModelImportError as exc:
        sys.exit(f"multai models {command}: {exc}")
