"""HTTP for the MLflow REST API: one ``requests`` session per source, bounded retries.

Credentials, timeouts and retry settings come from the source's config, never
from process-wide environment variables (MLflow's own client reads
``MLFLOW_TRACKING_USERNAME`` / ``PASSWORD`` / ``TOKEN`` and its retry settings
from the environment, which one process collecting several servers cannot
share). 429, 5xx and connection errors are retried with exponential backoff
and jitter, honouring ``Retry-After``; other failures are typed at once:
401/403 :class:`~affidavit.errors.AuthError`, other 4xx
:class:`~affidavit.errors.FatalError`, retries exhausted
:class:`~affidavit.errors.RetriableError`. Every message names the source and
the server without credentials.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from affidavit.errors import AuthError, FatalError, RetriableError

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK_SIZE = 1 << 20  # bytes per read of a streamed download


@dataclass(frozen=True)
class HttpSettings:
    """How to reach one MLflow server (built from a source's config)."""

    source: str  # the source's name, for messages
    base_url: str  # scheme://host[:port][/prefix], no credentials, no trailing slash
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    verify: bool | str = True  # False, or a CA bundle path
    timeout: float = 30.0  # seconds to connect and between bytes read
    max_retries: int = 5
    backoff: float = 0.5  # seconds; attempt n waits backoff * 2**n (+ jitter)
    max_retry_wait: float = 60.0  # cap on any single wait, Retry-After included
    pool_size: int = 8

    @property
    def identity(self) -> str:
        if self.token:
            return "a bearer token"
        if self.username:
            return f"user {self.username}"
        return "no credentials"


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``https://user:pw@host/x`` -> (``https://host/x``, user, pw); the URL loses its trailing slash."""
    parts = urlsplit(url)
    user = parts.username
    pw = parts.password
    host = parts.netloc.rpartition("@")[2]
    clean = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), parts.query, parts.fragment))
    return clean, unquote(user) if user else None, unquote(pw) if pw else None


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _server_message(resp: requests.Response) -> str:
    """The error text an MLflow server put in its JSON body, else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip().splitlines()
        return text[0][:200] if text else (resp.reason or "")
    if isinstance(body, dict):
        code = body.get("error_code")
        msg = body.get("message") or body.get("error") or ""
        return f"{code}: {msg}" if code else str(msg)[:300]
    return str(body)[:200]


class HttpClient:
    """A session with the source's credentials and its retry policy."""

    def __init__(self, settings: HttpSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._random = random.Random()
        session = requests.Session()
        session.trust_env = False  # no proxy or netrc credentials picked up from the environment
        if settings.token:
            session.headers["Authorization"] = f"Bearer {settings.token}"
        elif settings.username is not None:
            session.auth = (settings.username, settings.password or "")
        session.headers["User-Agent"] = "affidavit-mlflow-connector"
        session.verify = settings.verify
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(2, settings.pool_size), max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.session = session

    def close(self) -> None:
        self.session.close()

    def where(self) -> str:
        return f"source {self.settings.source!r}: MLflow at {self.settings.base_url}"

    def _wait(self, attempt: int, resp: requests.Response | None) -> float:
        s = self.settings
        asked = retry_after(resp.headers.get("Retry-After")) if resp is not None else None
        if asked is not None:
            return min(asked, s.max_retry_wait)
        base = s.backoff * (2**attempt)
        return float(min(base + self._random.uniform(0, base / 2), s.max_retry_wait))

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                json: Any = None, stream: bool = False) -> requests.Response:
        """One call with retries. Returns any response below 400, or a 404 (the caller decides)."""
        s = self.settings
        url = s.base_url + path
        for attempt in range(s.max_retries + 1):
            resp: requests.Response | None = None
            try:
                resp = self.session.request(method, url, params=params, json=json, stream=stream,
                                            timeout=(s.timeout, s.timeout))
            except requests.exceptions.SSLError as e:
                raise FatalError(f"{self.where()}: TLS failed: {type(e).__name__}",
                                 hint="check the server's certificate, or set ca_bundle in the source") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
                problem = f"{type(e).__name__} on {method} {path}"
            else:
                if resp.status_code < 400 or resp.status_code == 404:
                    return resp
                self._raise_fatal(resp, method, path)
                problem = f"HTTP {resp.status_code} on {method} {path}"
            if attempt == s.max_retries:
                if resp is not None:
                    resp.close()
                raise RetriableError(
                    f"{self.where()}: {problem}, still failing after {s.max_retries + 1} attempts",
                    hint="the server is down or overloaded; the next scheduled run retries",
                )
            wait = self._wait(attempt, resp)
            if resp is not None:
                resp.close()
            log.info("source %s: %s; retrying in %.1f s (attempt %d of %d)",
                     s.source, problem, wait, attempt + 2, s.max_retries + 1)
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_fatal(self, resp: requests.Response, method: str, path: str) -> None:
        """Raise for a status that retrying will not fix; return for a retriable one."""
        code = resp.status_code
        if code in RETRY_STATUS:
            return
        detail = _server_message(resp)
        resp.close()
        if code == 401:
            raise AuthError(
                f"{self.where()} refused the credentials ({self.settings.identity}): HTTP 401",
                hint="check username/password or token in the source's config",
            )
        if code == 403:
            raise AuthError(
                f"{self.where()} denied {self.settings.identity} access to {path}: HTTP 403",
                hint="grant the account read permission on the registry and experiments",
            )
        raise FatalError(f"{self.where()}: {method} {path} failed: HTTP {code} {detail}".rstrip())

    def get_json(self, path: str, params: Mapping[str, Any] | None = None, *,
                 missing_ok: bool = False) -> dict[str, Any] | None:
        """GET a JSON object; None for a missing resource when ``missing_ok``."""
        return self.call_json("GET", path, params=params, missing_ok=missing_ok)

    def call_json(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                  json: Any = None, missing_ok: bool = False) -> dict[str, Any] | None:
        resp = self.request(method, path, params=params, json=json)
        with resp:
            if resp.status_code == 404:
                detail = _server_message(resp)
                if missing_ok and "RESOURCE_DOES_NOT_EXIST" in detail:
                    return None
                raise FatalError(f"{self.where()}: {method} {path}: HTTP 404 {detail}".rstrip(),
                                 hint="check tracking_uri; is this an MLflow tracking server (MLflow 2.9 or newer)?")
            try:
                body = resp.json()
            except ValueError:
                raise FatalError(
                    f"{self.where()}: {path} did not answer with JSON "
                    f"(content type {resp.headers.get('Content-Type', 'none')})",
                    hint="check tracking_uri: it should be the MLflow server's address, not a login page or proxy",
                ) from None
        if not isinstance(body, dict):
            raise FatalError(f"{self.where()}: {path} answered with JSON that is not an object")
        return body

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[Iterator[bytes]]:
        """A GET whose body is read in chunks; FatalError on 404."""
        resp = self.request("GET", path, params=params, stream=True)
        try:
            if resp.status_code == 404:
                raise FatalError(f"{self.where()}: {path} not found (HTTP 404)",
                                 hint="the artefact was deleted while collecting; run again")
            yield resp.iter_content(CHUNK_SIZE)
        finally:
            resp.close()


def read_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that a broken connection raises while a streamed body is read."""
    return (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout)
