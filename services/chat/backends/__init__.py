"""Chat engines behind one small interface; backends never import grpc."""
