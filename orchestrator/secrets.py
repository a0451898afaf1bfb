"""Keep credentials out of everything we print, log or record.

Two layers:

- Every URL the product is given (the sweep's storage URLs, ``--db``, ``--mlflow-ui``) goes
  through :func:`remember_url`, which parses it with SQLAlchemy's ``make_url`` and
  ``urllib.parse`` and remembers its password and secret query values. :func:`mask` then
  replaces each remembered secret wherever it appears, in every form text can carry it
  (as written, percent-encoded, JSON- or ``repr``-escaped, HTML-escaped), whatever
  characters it holds.
- A pattern catches ``scheme://user:password@`` and ``password=``/``token=`` values in text
  that never came through such a field (a driver's error message, a URL typed elsewhere).
"""

from __future__ import annotations

import html
import json
import os
import re
import urllib.parse
from typing import Any

MASK = "***"

# Text a URL in free text cannot contain unescaped: where the password of a URL in prose must end.
_NOT_IN_URL = r"\s\"'<>`"
# The password runs to the authority's last '@', so one written with '/', ':', '#', '?' or an
# unencoded '@' is masked whole; over-masking a path that holds an '@' is the safe mistake.
_URL_PASSWORD = re.compile(
    rf"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@{_NOT_IN_URL}]*):(?P<password>[^{_NOT_IN_URL}]*)@"
)
# The same in a string that is one URL, whatever characters its password holds.
_WHOLE_URL_PASSWORD = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@]*:(?P<password>.*)@", re.DOTALL)
_SECRET_KEY = r"(?:password|passwd|pwd|token|secret|api_key|apikey|access_key)"
_QUERY_SECRET = re.compile(rf"(?i)(?P<key>{_SECRET_KEY}=)(?P<value>[^&{_NOT_IN_URL}]+)")
_SECRET_NAME = re.compile(rf"(?i){_SECRET_KEY}|pass|credential")
# Shorter remembered secrets are masked only by the patterns: replacing every "ab" would garble all output.
_MIN_LENGTH = 3

_remembered: set[str] = set()


def mask(text: str) -> str:
    """Return ``text`` with every remembered secret, URL password and secret query value replaced by ``***``."""
    for secret in sorted(_remembered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{MASK}", text)


def mask_tree(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with :func:`mask` applied to every string in it."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask_tree(key): mask_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_tree(item) for item in value]
    return value


def remember(secret: str) -> None:
    """Mask ``secret`` from now on, in each form it can take in text."""
    if len(secret) < _MIN_LENGTH:
        return
    _remembered.update(
        form
        for form in (
            secret,
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret, safe=""),
            urllib.parse.quote(secret),  # what a URL builder that keeps '/' writes
            json.dumps(secret)[1:-1],
            json.dumps(secret, ensure_ascii=False)[1:-1],
            repr(secret)[1:-1],
            html.escape(secret),
        )
        if len(form) >= _MIN_LENGTH
    )


def remember_url(url: str | None) -> str | None:
    """Remember the secrets in ``url`` (its password, secret query values); return ``url`` unchanged."""
    for secret in url_secrets(url) if url else ():
        remember(secret)
    return url


def remember_substitutions(template: str, expanded_url: str) -> None:
    """Remember the values of the environment variables ``template`` names that hold secrets:
    those whose name says so (``${PGPASSWORD}``) and those that end up in the URL's password."""
    secrets = url_secrets(expanded_url)
    for name in re.findall(r"\$\{(\w+)\}|\$(\w+)", template):
        name = name[0] or name[1]
        value = os.environ.get(name)
        if value and (_SECRET_NAME.search(name) or any(value in secret for secret in secrets)):
            remember(value)


# scheme://rest: the text after the scheme, where a userinfo (user:password@) may begin.
_AFTER_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://(?P<rest>.*)$", re.DOTALL)
# What ends a URL's userinfo for a strict (RFC 3986) reader, other than its '@'.
_ENDS_AUTHORITY = "/?#[]"
MISREAD_USERINFO_FIX = (
    "the driver would not read the user name and password as written (an unencoded '@', '/', '?' or '#' in them, "
    "or an '@' after the host); percent-encode the password: %40 for '@', %2F for '/', %3F for '?', %23 for '#' "
    "(in Python: urllib.parse.quote(password, safe=''))"
)


def misread_userinfo(url: str) -> bool:
    """True when a driver would read the user name or password of ``url`` other than as written.

    SQLAlchemy's ``make_url`` ends the password at the first '@' and lets it hold '/', '?' and
    '#'; a strict RFC 3986 reader (``urllib``, ``requests``) ends it at the first '/', '?' or '#';
    the user may have meant it to run to the last '@'. A URL is read the same by all of them only
    when it holds at most one unencoded '@' and its userinfo none of ``/?#[]``; an '@' anywhere
    else (host, path, query) could as well be the end of a password, so it is refused too.
    A URL without an authority (``sqlite:///path``) has no userinfo to misread."""
    written = _AFTER_SCHEME.match(url)
    if written is None or written["rest"].startswith("/") or "@" not in written["rest"]:
        return False
    rest = written["rest"]
    userinfo = rest[: rest.index("@")]
    if rest.count("@") > 1 or any(character in userinfo for character in _ENDS_AUTHORITY):
        return True
    user, _, password = userinfo.partition(":")
    return _make_url_userinfo(url) != (urllib.parse.unquote(user), urllib.parse.unquote(password) if ":" in userinfo else None)


def _make_url_userinfo(url: str) -> tuple[str | None, str | None] | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    return parsed.username, None if parsed.password is None else str(parsed.password)


def url_secrets(url: str) -> list[str]:
    """The password and secret query values of ``url``, as each parser reads them (decoded and as
    written); for a URL whose userinfo a parser misreads, also each piece of the password that a
    parser takes for the host, port, path, query or fragment (a driver's error may quote it)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    found: list[str] = []
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        pass
    else:
        if parsed.password:
            found.append(str(parsed.password))
        found.extend(_secret_query_values(dict(parsed.query)))
    try:
        split = urllib.parse.urlsplit(url)
        if split.password:
            found.append(split.password)
        found.extend(_secret_query_values(urllib.parse.parse_qs(split.query)))
    except ValueError:
        pass
    written = _WHOLE_URL_PASSWORD.match(url)  # the password as written, up to the last '@'
    if written and written["password"]:
        found.extend((written["password"], urllib.parse.unquote(written["password"])))
        if misread_userinfo(url):  # each piece's part inside the password, where a parser's piece straddles its end
            start, end = written.span("password")
            for piece in _parsed_pieces(url):
                for at in (match.start() for match in re.finditer(re.escape(piece), url, re.IGNORECASE)):  # urllib lower-cases the host
                    inside = url[max(at, start) : min(at + len(piece), end)]
                    found.extend((inside, urllib.parse.unquote(inside), inside.lower()))
    return [secret for secret in dict.fromkeys(found) if secret]


# SQLAlchemy's make_url splits a URL with this pattern (sqlalchemy.engine.url._parse_url), then
# unquotes the user name, password and database and reads the port as a number.
_MAKE_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def _parsed_pieces(url: str) -> list[str]:
    """Every component SQLAlchemy's ``make_url`` and ``urllib`` read in ``url``, as written and decoded."""
    pieces: list[str] = []
    parts = _MAKE_URL.match(url)
    if parts is not None:
        pieces.extend(value for value in parts.groupdict().values() if value)
        pieces.extend(item for pair in urllib.parse.parse_qsl(parts["query"] or "") for item in pair)
    try:
        split = urllib.parse.urlsplit(url)
    except ValueError:  # an unmatched '[' or ']'
        return [*pieces, *(urllib.parse.unquote(piece) for piece in pieces)]
    pieces.extend(value for value in (split.netloc, split.path, split.query, split.fragment) if value)
    for name in ("username", "password", "hostname", "port"):
        try:
            value = getattr(split, name)
        except ValueError:  # a port that is not a number
            continue
        if value:
            pieces.append(str(value))
    return [*pieces, *(urllib.parse.unquote(piece) for piece in pieces)]


def _secret_query_values(query: dict[str, Any]) -> list[str]:
    values: list[str] = []
    for key, value in query.items():
        if re.fullmatch(rf"(?i){_SECRET_KEY}", key):
            values.extend([value] if isinstance(value, str) else list(value))
    return values
