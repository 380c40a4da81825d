"""The chat service: text generation with llama.cpp GGUF models."""
