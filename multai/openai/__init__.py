"""OpenAI's objects as pydantic models, one module per endpoint, in the reference's field order.

The REST bridge reads requests and writes responses with them, and the gRPC client library
(`multai.client`) returns the same response objects, built by the same code (`generation.py`).
"""
