"""A real process that registers as a service, takes a lease and holds it until killed (fault tests)."""

import asyncio
import sys
from pathlib import Path

from multai.common.v1 import common_pb2
from multai.mesh_tls import MeshChannels
from multai.scheduler.v1 import scheduler_pb2
from multai.scheduler_client import SchedulerClient


async def hold(address: str, model: str, certs_dir: Path) -> None:
    client = SchedulerClient(address, "holder", MeshChannels(certs_dir))
    await client.start(10, [scheduler_pb2.ModelFootprint(model=model, size_bytes=1_000_000)])
    async with client.lease("holder-request", model, common_pb2.PRIORITY_NORMAL, 10):
        print("HELD", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
