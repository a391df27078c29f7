"""Request bodies read under the server's size limit: JSON for the completion endpoints, a multipart form
for transcriptions. A body over the limit is refused (413) as soon as it is known to be, before it is all
read; a body that does not parse is a 400."""
from __future__ import annotations

import json
import logging
from typing import AsyncIterator, Optional

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from .protocol import APIError

# The multipart parser logs a warning for every malformed form; the client already gets a 400 naming the
# problem, so a server under a stream of bad uploads would otherwise fill its log with one line each.
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)

MAX_FIELD_BYTES = 64 * 1024  # a form field that is not a file (model, prompt, language, ...)
MAX_FIELDS = 32


async def body_pieces(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body as it arrives; 413 once it is past `limit` bytes (at once if its Content-Length says so)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise APIError(413, f"the body is {int(length):,} bytes, over the limit of {limit:,}", code="body_too_large")
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise APIError(413, f"the body is over the limit of {limit:,} bytes", code="body_too_large")
        yield piece


async def read_json(request: Request, limit: int) -> object:
    """The request body as JSON."""
    body = b"".join([piece async for piece in body_pieces(request, limit)])
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise APIError(400, "the body is not valid JSON") from None


async def read_form(request: Request, limit: int, file_field: str = "file") -> tuple[dict, bytes, Optional[str]]:
    """A multipart/form-data body -> (its text fields, the bytes of its one file, the file's name).

    A field named `NAME[]` (how clients send arrays) becomes a list under NAME; any other field given twice
    keeps its last value. The file must be the field `file_field`; any other file is refused.
    """
    kind = request.headers.get("content-type", "")
    if not kind.lower().startswith("multipart/form-data"):
        raise APIError(400, f"the body must be multipart/form-data (a form with the audio as its {file_field!r} "
                            f"file), got {kind or 'no Content-Type'}", code="invalid_content_type")
    parser = MultiPartParser(request.headers, body_pieces(request, limit), max_files=1, max_fields=MAX_FIELDS,
                             max_part_size=MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise APIError(400, f"the form could not be read: {exc.message}") from None
    fields: dict = {}
    upload: Optional[UploadFile] = None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != file_field:
                    raise APIError(400, f"{name}: only {file_field!r} may be a file", param=name)
                upload = value
            elif name.endswith("[]"):
                fields.setdefault(name[:-2], []).append(value)
            else:
                fields[name] = value
        if upload is None:
            if file_field in fields:
                raise APIError(400, f"{file_field} must be a file upload (a form part with a filename), not text",
                               param=file_field)
            raise APIError(400, f"{file_field}: field required (the audio, as a form file)", param=file_field)
        data = await upload.read()
        return fields, data, upload.filename
    finally:
        await form.close()
