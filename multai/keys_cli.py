"""`multai keys`: create, list, revoke API keys and show their usage, in the state database."""

import argparse
import sys

from multai.api_keys import ApiKey, KeyStore, KeyUsage
from multai.openai_params import PRIORITY_NAMES
from multai.settings import MultaiSettings
from multai.state_db import database_url, open_engine


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_keys_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Adds `keys` and its subcommands to the `multai` parser."""
    keys = commands.add_parser("keys", help="API keys of the REST API: create, list, revoke, usage")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="make a key and print its secret, once")
    create.add_argument("name", help="unique name, 1 to 64 of A-Z a-z 0-9 _ . -")
    create.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="model ids or aliases it may use (default: all)",
    )
    create.add_argument(
        "--max-priority",
        choices=PRIORITY_NAMES,
        default=PRIORITY_NAMES[0],
        help="most urgent priority it may ask for (default: %(default)s)",
    )
    create.add_argument("--rpm", type=positive_int, help="requests per minute (default: unlimited)")
    create.add_argument("--tpm", type=positive_int, help="tokens per minute (default: unlimited)")
    create.add_argument("--concurrency", type=positive_int, help="requests at once (default: unlimited)")
    listing = key_commands.add_parser("list", help="every key with its limits, revoked ones marked")
    revoke = key_commands.add_parser("revoke", help="stop a key from working, for good")
    revoke.add_argument("name")
    usage = key_commands.add_parser("usage", help="requests, tokens, audio seconds and images per key")
    usage.add_argument("name", nargs="?", help="one key (default: all)")
    for sub in (create, listing, revoke, usage):
        sub.add_argument("--state-dir", help="folder of the state database (default: MULTAI_STATE_DIR)")


def _optional(value: int | None) -> str:
    return "-" if value is None else str(value)


def format_keys(keys: list[ApiKey]) -> str:
    """The keys as a table."""
    lines = [
        f"{'NAME':<24} {'PREFIX':<16} {'MODELS':<24} {'TIER':<11} {'RPM':<7} {'TPM':<9} "
        f"{'CONCURRENCY':<12} CREATED"
    ]
    for key in keys:
        label = " (revoked)" if key.revoked else ""
        lines.append(
            f"{key.name:<24} {key.prefix:<16} {','.join(key.models) or '*':<24} "
            f"{PRIORITY_NAMES[key.max_priority]:<11} {_optional(key.rpm):<7} {_optional(key.tpm):<9} "
            f"{_optional(key.concurrency):<12} {key.created_at:%Y-%m-%d %H:%M}{label}"
        )
    return "\n".join(lines)


def format_usage(usage: list[KeyUsage]) -> str:
    """Usage totals as a table."""
    lines = [f"{'NAME':<24} {'REQUESTS':<10} {'PROMPT':<12} {'COMPLETION':<12} {'AUDIO_S':<10} IMAGES"]
    lines += [
        f"{u.name:<24} {u.requests:<10} {u.prompt_tokens:<12} {u.completion_tokens:<12} "
        f"{u.audio_seconds:<10.1f} {u.images}"
        for u in usage
    ]
    return "\n".join(lines)


def run_keys_command(args: argparse.Namespace) -> None:
    """Runs a parsed `multai keys ...` command; exits non-zero with a message on a refused one."""
    settings = MultaiSettings(**({"state_dir": args.state_dir} if args.state_dir else {}))
    engine = open_engine(database_url(settings))
    store = KeyStore(engine)
    try:
        if args.keys_command == "create":
            try:
                key, secret = store.create(
                    args.name,
                    models=args.models,
                    max_priority=PRIORITY_NAMES.index(args.max_priority),
                    rpm=args.rpm,
                    tpm=args.tpm,
                    concurrency=args.concurrency,
                )
            except ValueError as exc:
                sys.exit(str(exc))
            # The secret alone on stdout, so that a script can capture it; the notice goes to the terminal.
            print(secret)
            print(f"created key {key.name!r} ({key.prefix}); it cannot be shown again.", file=sys.stderr)
        elif args.keys_command == "list":
            print(format_keys(store.list()))
        elif args.keys_command == "revoke":
            if not store.revoke(args.name):
                sys.exit(f"no active key named {args.name!r}")
            print(f"revoked key {args.name!r}")
        else:
            usage = store.usage(args.name)
            if args.name is not None and not usage:
                sys.exit(f"no key named {args.name!r}")
            print(format_usage(usage))
    finally:
        engine.dispose()
