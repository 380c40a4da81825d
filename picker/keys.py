"""API keys' priority tiers, so that the picker sheds a request at the level its bridge will run it at.

The bridge runs a request that names no priority at its key's tier's default (a background-only key's
requests are background). Without the tiers the picker would count those as normal, and shed them last.
"""

import asyncio
import logging

from multai.api_keys import ApiKey, KeyStore, bearer_secret, find_key

log = logging.getLogger(__name__)


class KeyTiers:
    """The active keys from the state database, reloaded every few seconds off the event loop."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._active: dict[str, ApiKey] = {}

    def tier(self, authorization: str) -> int | None:
        """The most urgent level the key of an Authorization header may use; None without a known key."""
        secret = bearer_secret(authorization)
        key = find_key(self._active, secret) if secret else None
        return None if key is None else key.max_priority

    async def refresh_forever(self, interval: float) -> None:
        """Reloads the keys every interval seconds, until cancelled."""
        while True:
            # A database that is briefly locked or down must not end the task: the tiers would go stale.
            try:
                self._active = await asyncio.to_thread(self._store.active)
            except Exception as exc:
                log.warning("could not read API keys from the state database: %s", exc)
            await asyncio.sleep(interval)
