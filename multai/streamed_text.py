"""Text streamed token by token, where the end may be the start of a marker (a stop sequence, a tool-call
tag) that only the next tokens confirm; the chat and vision engines hold such an end back."""


def partial_marker_length(text: str, marker: str) -> int:
    """The length of the longest end of `text` that begins `marker`: what may still grow into it."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0
