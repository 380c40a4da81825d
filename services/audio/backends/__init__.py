"""Audio engines behind two small interfaces; backends never import grpc."""
