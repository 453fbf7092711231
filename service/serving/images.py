"""Images in requests: chat `image_url` parts and Responses `input_image` parts, made AgentChat
`Image`s for a team whose agents can see.

- Data URLs (`data:image/png;base64,...`) are always taken. An http(s) URL is fetched by the service
  only with `IMAGE_URL_FETCH` on (off by default: the service would reach any address a caller
  names, internal ones included); with it off, such a part is a 400 that says so.
- Bounds (settings): at most `MAX_IMAGES` images per request and `MAX_IMAGE_BYTES` bytes per image
  (decoded or downloaded); the fetches of a request run together, within `IMAGE_FETCH_TIMEOUT_S`
  in all, each following at most 3 redirects.
  Bytes are checked as an image (PNG, JPEG, GIF or WebP, by Pillow) off the event loop.
- A team none of whose agents' models can see (`model_info["vision"]`) gets a 400 naming the first
  image part, before anything is fetched or run. (In a team where some agents see, AgentChat gives
  the others the text alone: its `AssistantAgent` drops images for a model without vision.)

Every refusal is a 400 whose `param` is the image part (`messages.0.content.1`, `input.0.content.1`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import httpx2
from autogen_core import Image
from PIL import Image as PILImage

from service.config import Settings
from service.contract.chat import ChatMessage
from service.contract.errors import OpenAIError
from service.contract.responses import CreateResponse, InputMessage
from service.workflows.capabilities import agent_models

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP"})
MAX_REDIRECTS = 3
_DATA_URL = re.compile(r"^data:(image/[A-Za-z0-9.+-]+)?(;[^,;]*)*;base64,", re.ASCII)


@dataclass(frozen=True)
class ImageInput:
    """An image part of the request: where it is (`param`) and its URL."""

    param: str
    url: str


def chat_images(messages: Sequence[ChatMessage]) -> list[ImageInput]:
    return [
        ImageInput(f"messages.{index}.content.{position}", image.url)
        for index, message in enumerate(messages)
        for position, image in message.images()
    ]


def responses_images(body: CreateResponse) -> list[ImageInput]:
    if isinstance(body.input, str):
        return []
    found = []
    for index, item in enumerate(body.input):
        if not isinstance(item, InputMessage):
            continue
        for position, part in item.images():
            param = f"input.{index}.content.{position}"
            if part.image_url is None:
                raise OpenAIError(
                    400,
                    "An `input_image` needs an `image_url` (a data URL, or an http(s) URL where the service "
                    "fetches them): `file_id` needs a Files API, which this service does not offer.",
                    param=param,
                    code="unsupported_image",
                )
            found.append(ImageInput(param, part.image_url))
    return found


def refuse_blind_team(runner: object, images: Sequence[ImageInput]) -> None:
    """400 naming the first image when none of the team's agents has a model that sees."""
    if not images or any(model.can("vision") for model in agent_models(runner)):
        return
    raise OpenAIError(
        400,
        "This model's agents cannot see images (none of their models has vision in its model_info): "
        "send text only, or ask a team with a vision model.",
        param=images[0].param,
        code="image_not_supported",
    )


def _refused(image: ImageInput, reason: str) -> OpenAIError:
    return OpenAIError(400, f"The image at {image.param} {reason}", param=image.param, code="invalid_image")


def _checked(data: bytes, image: ImageInput, max_bytes: int) -> Image:
    """The bytes as an AgentChat `Image` (run in a thread: Pillow reads the header and checks it)."""
    if len(data) > max_bytes:
        raise _refused(image, f"has {len(data)} bytes, above the limit of {max_bytes} (MAX_IMAGE_BYTES).")
    try:
        with PILImage.open(io.BytesIO(data)) as probe:
            kind = probe.format
            probe.verify()
    except Exception:
        raise _refused(image, "is not a readable image.") from None
    if kind not in IMAGE_FORMATS:
        raise _refused(image, f"is a {kind} image: PNG, JPEG, GIF and WebP are taken.")
    return Image(PILImage.open(io.BytesIO(data)))


def _decoded(image: ImageInput, max_bytes: int) -> bytes:
    header = _DATA_URL.match(image.url)
    if header is None:
        raise _refused(image, "is a data URL that is not a base64 image (`data:image/png;base64,...`).")
    payload = image.url[header.end() :]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise _refused(image, f"is above the limit of {max_bytes} bytes (MAX_IMAGE_BYTES).")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _refused(image, "is a data URL whose base64 does not decode.") from None


async def _fetched(image: ImageInput, settings: Settings, client: httpx2.AsyncClient) -> bytes:
    limit = settings.max_image_bytes
    try:
        async with asyncio.timeout(settings.image_fetch_timeout_s):
            async with client.stream("GET", image.url) as response:
                if response.status_code != 200:
                    raise _refused(
                        image, f"could not be fetched: its server answered {response.status_code}."
                    )
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise _refused(image, f"is above the limit of {limit} bytes (MAX_IMAGE_BYTES).")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise _refused(image, f"is above the limit of {limit} bytes (MAX_IMAGE_BYTES).")
                return bytes(body)
    except TimeoutError:
        raise _refused(image, f"could not be fetched in {settings.image_fetch_timeout_s:g} s.") from None
    except httpx2.HTTPError as exc:
        raise _refused(image, f"could not be fetched ({type(exc).__name__}).") from None


async def load_images(images: Sequence[ImageInput], settings: Settings) -> dict[str, Image]:
    """The request's images by URL, decoded or fetched and checked (see the module docstring).

    Raises:
        OpenAIError: 400 naming the image part: too many images, too large, not an image, an http(s)
            URL while fetching is off, a fetch that failed or took too long.
    """
    if not images:
        return {}
    if len(images) > settings.max_images:
        raise OpenAIError(
            400,
            f"Too many images: at most {settings.max_images} per request (MAX_IMAGES).",
            param=images[settings.max_images].param,
            code="too_many_images",
        )
    first_of: dict[str, ImageInput] = {}
    for image in images:
        first_of.setdefault(image.url, image)
    unique = list(first_of.values())
    for image in unique:
        if image.url.startswith(("https://", "http://")) and not settings.image_url_fetch:
            raise _refused(
                image,
                "is an http(s) URL, and this service does not fetch images (IMAGE_URL_FETCH is off): "
                "send it as a data URL (`data:image/png;base64,...`).",
            )
        if not image.url.startswith(("data:", "https://", "http://")):
            raise _refused(image, "must be a data URL or an http(s) URL.")
    remote = [image for image in unique if not image.url.startswith("data:")]
    fetched: dict[str, bytes] = {}
    if remote:
        # Fetched together, within one IMAGE_FETCH_TIMEOUT_S; the first failure cancels the others.
        async with httpx2.AsyncClient(follow_redirects=True, max_redirects=MAX_REDIRECTS) as client:
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = {
                        image.url: group.create_task(_fetched(image, settings, client)) for image in remote
                    }
            except* OpenAIError as failed:
                raise failed.exceptions[0] from None
        fetched = {url: task.result() for url, task in tasks.items()}
    loaded: dict[str, Image] = {}
    for image in unique:
        data = fetched[image.url] if image.url in fetched else _decoded(image, settings.max_image_bytes)
        loaded[image.url] = await asyncio.to_thread(_checked, data, image, settings.max_image_bytes)
    return loaded
