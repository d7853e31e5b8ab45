"""A vendor's error response as (code, message): the shapes of the vendors' JSON errors, and a
non-JSON body (a proxy's HTML page) summarised by its title, never quoted.

Apart from the client because it is what a failed request *says*, which vendor clients also
read on their own (kt1's empty-queue answer), while the client decides what to do about it.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import requests

ERROR_SUMMARY_CHARS = 120

ErrorParser = Callable[[requests.Response], tuple[str, str]]

_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"<(h[1-6])\b[^>]*>(.*?)</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_MARK = re.compile(r"<(?:!doctype\s+html|html|head|body|title|h[1-6])\b", re.IGNORECASE)
_HIDDEN = re.compile(
    r"<!--.*?-->|<(script|style|head)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL
)
_TAG = re.compile(r"<[^>]*>")


def _plain(text: str, limit: int = ERROR_SUMMARY_CHARS) -> str:
    """Markup-free, whitespace-collapsed, at most `limit` characters."""
    text = _TAG.sub(" ", html.unescape(_TAG.sub(" ", text)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def summarize_error_body(response: requests.Response) -> str:
    """A non-JSON error body as one short line, never the body itself.

    An HTML page (a proxy's 502, a login wall) is named by its `<title>`, else its first
    heading, else the start of its visible text; any other text by its first non-empty line.
    """
    text = (response.text or "")[:65536]
    content_type = response.headers.get("Content-Type", "").lower()
    if "html" in content_type or _HTML_MARK.search(text[:4096]):
        title = _TITLE.search(text)
        if title and (found := _plain(title.group(1))):
            return found
        heading = _HEADING.search(text)
        if heading and (found := _plain(heading.group(2))):
            return found
        return _plain(_HIDDEN.sub(" ", text)) or "an HTML error page"
    for line in text.splitlines():
        if found := _plain(line):
            return found
    return ""


def parse_json_error(response: requests.Response) -> tuple[str, str]:
    """(code, message) from the vendors' JSON error shapes, never the raw body.

    `{"error": {"code", "message"}}` (AVL), `{"detail", "code"}` (AutoPi, DRF),
    `{"statusCode", "error", "message"}` (kt1), `{"error", "message"}` (Metrotec). A body
    that is not JSON (a proxy's HTML page) is summarised by `summarize_error_body`.
    """
    try:
        body = response.json()
    except ValueError:
        return response.reason or "", summarize_error_body(response)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            code = err.get("code") or err.get("error") or response.reason or ""
            message = err.get("message") or err.get("detail") or err.get("msg") or ""
            return str(code), str(message)[:200]
        return str(err), str(body.get("message") or body.get("detail") or "")[:200]
    return response.reason or "", str(body)[:200]
