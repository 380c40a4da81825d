"""/v1/models, and the bridge's view of which service owns which model (to route chat to vision)."""

import asyncio
import logging
import time

from multai.common.v1 import model_control_pb2, model_control_pb2_grpc
from multai.openai.models import ModelCard, ModelList
from rest_bridge.errors import OpenAIError
from rest_bridge.serving.rpc import call_unary

log = logging.getLogger(__name__)
LIST_TIMEOUT_SECONDS = 5.0
# Routing looks models up on every chat request; a short cache saves the calls, and a miss refreshes it
# at most this often so that unknown names cannot make the bridge call every service each time.
ROUTING_CACHE_SECONDS = 10.0
MISS_REFRESH_SECONDS = 1.0


class ModelsServing:
    """Lists models across the services, and finds the one a name means."""

    def __init__(self, stubs: list[model_control_pb2_grpc.ModelControlServiceStub]) -> None:
        self._stubs = stubs
        self._cached: list[ModelCard] = []
        self._cached_at = -float("inf")

    async def _cards_of(
        self, stub: model_control_pb2_grpc.ModelControlServiceStub, request_id: str
    ) -> list[ModelCard]:
        try:
            response = await call_unary(
                stub.ListModels, model_control_pb2.ListModelsRequest(), LIST_TIMEOUT_SECONDS, request_id
            )
        except OpenAIError as exc:
            # One service being down must not hide the models of the others.
            log.warning("a service did not list its models: %s", exc.message)
            return []
        return [ModelCard.from_pb(info) for info in response.models]

    async def listing(self, request_id: str) -> ModelList:
        """Every model of every service that answers, in id order."""
        per_service = await asyncio.gather(*(self._cards_of(stub, request_id) for stub in self._stubs))
        cards = sorted((card for cards in per_service for card in cards), key=lambda c: c.id)
        self._cached, self._cached_at = cards, time.monotonic()
        return ModelList(data=cards)

    async def retrieve(self, name: str, request_id: str) -> ModelCard:
        """One model by id or alias."""
        card = _named(name, (await self.listing(request_id)).data)
        if card is None:
            raise model_not_found(name)
        return card

    async def find(self, name: str, request_id: str) -> ModelCard | None:
        """The model a name means, from a recent listing; None when no service has it."""
        age = time.monotonic() - self._cached_at
        card = _named(name, self._cached) if age < ROUTING_CACHE_SECONDS else None
        if card is None and age >= MISS_REFRESH_SECONDS:
            card = _named(name, (await self.listing(request_id)).data)
        return card

    async def ids_of(self, modality: str, request_id: str) -> list[str]:
        """The ids of the models of one modality."""
        if time.monotonic() - self._cached_at >= ROUTING_CACHE_SECONDS:
            await self.listing(request_id)
        return [card.id for card in self._cached if card.modality == modality]


def _named(name: str, cards: list[ModelCard]) -> ModelCard | None:
    return next((card for card in cards if name == card.id or name in card.aliases), None)


def model_not_found(name: str) -> OpenAIError:
    """OpenAI's 404 for a model that does not exist, or that the caller's key may not use."""
    return OpenAIError(
        404,
        f"The model '{name}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
