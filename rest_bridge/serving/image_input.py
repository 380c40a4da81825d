"""Images given by URL in requests: data URLs are decoded; remote URLs are fetched only from allowed hosts.

No host is allowed by default, so the bridge makes no outbound connection a caller could aim at internal
addresses (cloud metadata, admin ports): that is both the privacy promise and the SSRF defence.
"""

import base64
import binascii
import re
from urllib.parse import urlsplit

import httpx

from rest_bridge.errors import OpenAIError, invalid_request

DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,")


class ImageInputs:
    """Turns the `url` of image parts into image bytes under the configured policy."""

    def __init__(self, allowed_hosts: list[str], max_bytes: int, fetch_timeout_seconds: float) -> None:
        self._allowed_hosts = {host.lower() for host in allowed_hosts}
        self._max_bytes = max_bytes
        self._fetch_timeout = fetch_timeout_seconds

    async def load(self, url: str, param: str) -> bytes:
        """The bytes of the image at url; a 400 naming param when it cannot or may not be read."""
        if url.startswith("data:"):
            return self._decode_data_url(url, param)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise invalid_request("image URLs must be data URLs (data:image/png;base64,...)", param)
        if parts.hostname.lower() not in self._allowed_hosts:
            raise OpenAIError(
                400,
                f"Fetching images from '{parts.hostname}' is not allowed: send the image as a base64 data "
                "URL, or add the host to the bridge's remote_image_hosts",
                param=param,
                code="image_url_not_allowed",
            )
        return await self._fetch(url, param)

    def _decode_data_url(self, url: str, param: str) -> bytes:
        match = DATA_URL.match(url)
        if match is None or not (match["media_type"] or "image/").startswith("image/"):
            raise invalid_request("a data URL must look like data:image/<type>;base64,<data>", param)
        payload = url[match.end() :]
        # base64 is 4 characters per 3 bytes; checking the text length first avoids decoding a huge body.
        if len(payload) * 3 // 4 > self._max_bytes:
            raise invalid_request(f"the image is larger than {self._max_bytes} bytes", param)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise invalid_request(f"the data URL is not valid base64 ({exc})", param) from exc
        if not data:
            raise invalid_request("the data URL holds no image", param)
        return data

    async def _fetch(self, url: str, param: str) -> bytes:
        # Redirects are not followed: they could lead to a host that is not allowed.
        try:
            async with (
                httpx.AsyncClient(timeout=self._fetch_timeout, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise invalid_request(f"fetching the image returned HTTP {response.status_code}", param)
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > self._max_bytes:
                        raise invalid_request(f"the image is larger than {self._max_bytes} bytes", param)
                return bytes(data)
        except httpx.HTTPError as exc:
            raise invalid_request(f"could not fetch the image ({type(exc).__name__})", param) from exc
