"""/v1/models: the models of every modality service, from their ModelControlService."""

from multai.common.v1 import common_pb2, model_control_pb2, model_control_pb2_grpc
from rest_bridge.errors import OpenAIError
from rest_bridge.protocol.models import ModelCard, ModelList
from rest_bridge.serving.rpc import call_unary

DEVICE_NAMES = {common_pb2.DEVICE_CPU: "cpu", common_pb2.DEVICE_GPU: "gpu"}
LIST_TIMEOUT_SECONDS = 5.0


def model_card(info: common_pb2.ModelInfo) -> ModelCard:
    """A ModelInfo as OpenAI's model object."""
    return ModelCard(
        id=info.id,
        created=info.created,
        aliases=list(info.aliases),
        modality=info.modality,
        backend=info.backend,
        fixture=info.fixture,
        resident=DEVICE_NAMES.get(info.resident_device),
    )


class ModelsServing:
    """Lists models across the services."""

    def __init__(self, stubs: list[model_control_pb2_grpc.ModelControlServiceStub]) -> None:
        self._stubs = stubs

    async def list(self, request_id: str) -> ModelList:
        """Every model of every service, in id order."""
        cards = []
        for stub in self._stubs:
            response = await call_unary(
                stub.ListModels, model_control_pb2.ListModelsRequest(), LIST_TIMEOUT_SECONDS, request_id
            )
            cards.extend(model_card(info) for info in response.models)
        return ModelList(data=sorted(cards, key=lambda c: c.id))

    async def retrieve(self, name: str, request_id: str) -> ModelCard:
        """One model by id or alias."""
        for card in (await self.list(request_id)).data:
            if name == card.id or name in card.aliases:
                return card
        raise OpenAIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
