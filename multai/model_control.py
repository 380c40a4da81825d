"""ModelControlService over any ModelHost: every modality service serves it the same way."""

import uuid
from typing import Any

import grpc

from multai.common.v1 import common_pb2, model_control_pb2, model_control_pb2_grpc
from multai.model_host import ModelHost
from multai.registry import ModelManifest


def model_info(manifest: ModelManifest, device: common_pb2.Device.ValueType) -> common_pb2.ModelInfo:
    """A manifest as the ModelInfo message."""
    return common_pb2.ModelInfo(
        id=manifest.id,
        aliases=manifest.aliases,
        modality=manifest.modality,
        backend=manifest.backend,
        size_bytes=manifest.size_bytes,
        n_layers=manifest.n_layers,
        fixture=manifest.fixture,
        created=manifest.created,
        resident_device=device,
        parent=manifest.base,
    )


class ModelControlServicer(model_control_pb2_grpc.ModelControlServiceServicer):
    """Lists, loads (under a lease) and unloads the models of one service."""

    def __init__(self, host: ModelHost[Any]) -> None:
        self._host = host

    async def ListModels(
        self, request: model_control_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> model_control_pb2.ListModelsResponse:
        return model_control_pb2.ListModelsResponse(
            models=[model_info(m, self._host.device_of(m.id)) for m in self._host.registry.models()]
        )

    async def LoadModel(
        self, request: model_control_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> model_control_pb2.LoadModelResponse:
        manifest = self._host.registry.resolve(request.model)
        async with self._host.leased(manifest, request.priority, f"load-{uuid.uuid4().hex[:8]}"):
            pass
        return model_control_pb2.LoadModelResponse(
            model=manifest.id, device=self._host.device_of(manifest.id)
        )

    async def UnloadModel(
        self, request: model_control_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> model_control_pb2.UnloadModelResponse:
        manifest = self._host.registry.resolve(request.model)
        was_loaded = await self._host.unload(manifest.id)
        if was_loaded:
            self._host.scheduler.report_evicted(manifest.id)
        return model_control_pb2.UnloadModelResponse(was_loaded=was_loaded)
