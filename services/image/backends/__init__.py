"""Text-to-image engines behind one small interface; backends never import grpc."""
