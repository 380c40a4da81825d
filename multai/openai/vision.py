"""Pydantic model of the seed design's /v1/vision: one image and one prompt."""

from pydantic import Field

from multai.openai.chat import ChatCompletionRequest
from multai.openai.common import SamplingFields


class VisionRequest(SamplingFields):
    """The request body; the answer is a chat completion (streamed when `stream` is true)."""

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    image: str = Field(
        min_length=1,
        description="A data URL, bare base64 of an image file, or an http(s) URL of an allowed host.",
    )

    def as_chat(self) -> ChatCompletionRequest:
        """The same request as one user message with the image before the prompt."""
        # Bare base64 becomes a data URL without a media type; the vision service reads the format itself.
        url = (
            self.image
            if self.image.startswith(("data:", "http:", "https:"))
            else f"data:;base64,{self.image}"
        )
        content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": self.prompt}]
        fields = self.model_dump(exclude={"prompt", "image"}, exclude_none=True)
        return ChatCompletionRequest.model_validate(
            {**fields, "messages": [{"role": "user", "content": content}]}
        )
