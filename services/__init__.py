"""The modality services: one gRPC process per modality, each owning its models.

Importing this package, which every service does before its engines, switches off what would send data off
the machine. Models are local folders, so the hubs' offline switches make any attempt to reach one fail at
once; ONNX Runtime (Piper, Silero VAD) sends usage telemetry to Microsoft unless ORT_DISABLE_TELEMETRY is
set before it loads (tests/e2e/test_privacy.py caught its DNS lookups), and the others' switches are the
same kind of promise.
"""

import os

os.environ.update(
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HUB_DISABLE_TELEMETRY="1",
    ORT_DISABLE_TELEMETRY="1",
    DO_NOT_TRACK="1",
)
