"""The modality services: one gRPC process per modality, each owning its models."""
