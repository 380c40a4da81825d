"""The REST bridge: OpenAI JSON over HTTP in, protobuf over gRPC to the modality services, and back."""
