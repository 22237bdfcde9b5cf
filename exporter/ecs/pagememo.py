"""An answer that says again what the last one said gets the page parsed from it last time.

A steady refresh asks for the first page of the same query every half minute and, in a quiet
fleet, gets the same records back: only the answer's ``RequestId`` and its opaque ``NextToken``
differ. Parsing and cleaning those 50 records was the largest part of what such a refresh cost
the exporter itself (about a sixth of a steady round of 300 targets). :class:`PageMemo` keeps,
for each of a client's first-page queries, a digest of the last answer with the values of
``RequestId`` and ``NextToken`` left out, and the page parsed from it; an answer with the same
digest gets that page back, with its own request id and token.

Why the page handed back is the page a parse would make:

* parsing is a pure function of the body and the :class:`~exporter.ecs.untrusted.TextCleaner`
  (its caches are only shortcuts); the memo remembers which cleaner parsed the page, so rotated
  credentials (another cleaner, other secrets to hide) parse afresh;
* a JSON string cannot hold a raw ``"``, so the bytes ``"RequestId":"`` (or ``"NextToken":"``)
  are a key and the start of its string value wherever they appear. An answer where one appears
  more than once, or whose value holds an escape, is parsed every time. A value is left out
  only when the parse read it from there (the page's request id is that value cleaned, its
  token that value, not empty); two bodies equal outside such values have the same structure,
  so the new values are the new page's, read the same way;
* only first pages are remembered (``NextToken`` pages of a long walk differ from one another,
  and hashing them would only add to a cold walk), at most :data:`MAX_QUERIES` per client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from exporter.ecs.models import Page
from exporter.ecs.untrusted import TextCleaner

__all__ = ["MAX_QUERIES", "PageMemo"]

MAX_QUERIES: Final = 8
"""First-page queries a client remembers (the fast path's, the Running walk's, a few look-ups);
the one used least recently is forgotten when one more comes, so look-ups of many InvokeIds do
not push out the fast path's, read every refresh."""
_REQUEST_ID: Final = b'"RequestId":"'
_NEXT_TOKEN: Final = b'"NextToken":"'


class _Unsafe(Exception):
    """A value that cannot be left out safely (see the module docstring)."""


def _value(body: bytes, key: bytes) -> tuple[int, int, str] | None:
    """Where the string value of ``key`` is in ``body``, and the value; None when the key is
    not there. Raises :class:`_Unsafe` when it is there more than once or with an escape, and
    when the value is not UTF-8 (not JSON: the parse says how)."""
    start = body.find(key)
    if start < 0:
        return None
    start += len(key)
    end = body.find(b'"', start)
    if end < 0 or body.find(key, end) >= 0 or b"\\" in body[start:end]:
        raise _Unsafe
    try:
        return start, end, body[start:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _Unsafe from None


class PageMemo:
    """A client's last first pages, by query string (see the module docstring). Used by one
    call at a time per query; concurrent calls at worst parse again."""

    def __init__(self) -> None:
        self._pages: dict[str, tuple[bytes, TextCleaner, Page]] = {}

    def parse(
        self,
        query: str,
        body: bytes,
        text: TextCleaner,
        parse: Callable[[bytes, TextCleaner], Page],
    ) -> Page:
        """The page of ``body`` (an answer to ``query``, a first page): ``parse(body, text)``,
        or the page it made last time when only the request id and the token changed."""
        try:
            found_id, found_token = _value(body, _REQUEST_ID), _value(body, _NEXT_TOKEN)
        except _Unsafe:
            return parse(body, text)
        # An empty value stays in the digest; which values were left out goes into it too (an
        # empty token after a full one is the end of the pages, not the same answer).
        request_id = text.name(found_id[2]) if found_id is not None and found_id[2] else ""
        token = found_token[2] if found_token is not None else ""
        spans = sorted(
            (found[0], found[1])
            for found in (found_id, found_token)
            if found is not None and found[2]
        )
        digest = hashlib.sha256(bytes([bool(request_id), bool(token)]))
        view = memoryview(body)
        done = 0
        for start, end in spans:
            digest.update(view[done:start])
            done = end
        digest.update(view[done:])
        key = digest.digest()
        last = self._pages.pop(query, None)  # put back last: the most recently used
        if last is not None:
            self._pages[query] = last
        if last is not None and last[0] == key and last[1] is text:
            page = last[2]
            return replace(
                page,
                request_id=request_id or page.request_id,
                next_token=token or page.next_token,
            )
        page = parse(body, text)
        # Left out only what the parse read from there (see the module docstring).
        if (not request_id or page.request_id == request_id) and (
            not token or page.next_token == token
        ):
            if len(self._pages) >= MAX_QUERIES and query not in self._pages:
                del self._pages[next(iter(self._pages))]
            self._pages[query] = (key, text, page)
        return page
