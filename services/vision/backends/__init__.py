"""Vision-language engines; backends never import grpc."""
