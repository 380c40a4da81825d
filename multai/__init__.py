"""MultAI: shared bootstrap, settings, model registry and CLI for every process of the mesh."""
