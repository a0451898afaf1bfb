"""Keep credentials out of everything we print, log or record."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|token|secret|api_key)=)(?P<value>[^&\s]+)")

MASK = "***"


def mask(text: str) -> str:
    """Return ``text`` with URL passwords and ``password=``/``token=`` query values replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)
