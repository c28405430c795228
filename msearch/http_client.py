"""A running ``msearch serve`` asked over HTTP with Python's own client: a command that only asks
a server (``msearch search`` while it runs) imports nothing else and starts in a fraction of the
time httpx's import and TLS set-up take. Requests and answers are plain JSON; the server checks
them (its 4xx ``detail`` comes back as the error's message)."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from msearch.errors import MsearchError, NotFound


class HttpClient:
    def __init__(self, url: str, timeout: float = 120.0):
        parts = urlsplit(url)
        self.url = url
        self._address = (parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "https" else 80))
        self._https = parts.scheme == "https"
        self._timeout = timeout
        self._conn = None

    def _connection(self):
        import http.client

        if self._conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = kind(*self._address, timeout=self._timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        """(status, the JSON answer parsed, or its text) of one request; the connection is kept."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):  # a kept connection the server closed is opened again, once
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except OSError as e:
                conn.close()
                self._conn = None
                if attempt:
                    raise MsearchError(f"cannot reach msearch at {self.url}: {e}") from e
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode("utf-8", "replace")

    def call(self, method: str, path: str, json_body=None, body: bytes | None = None, content_type=None):
        """The JSON answer of a request; 4xx and 5xx raise with the server's ``detail``."""
        if json_body is not None:
            body, content_type = json.dumps(json_body).encode(), "application/json"
        status, data = self.request(method, path, body, content_type)
        if status >= 400:
            detail = describe(data.get("detail", data) if isinstance(data, dict) else data)
            raise (NotFound if status == 404 else MsearchError)(detail if status == 404 else f"HTTP {status}: {detail}")
        return data

    def upload(self, example: str, data: bytes, fields: dict) -> dict:
        """A search by an example ``image`` or ``audio``: the file and the search's ``fields``
        (``kinds`` repeated, ``filters`` as JSON text) as multipart form data."""
        parts: list[tuple[str, object]] = []
        for name, value in fields.items():
            if value is None:
                continue
            if name == "kinds":
                parts += [("kinds", k) for k in value]
            elif name == "filters":
                parts.append(("filters", json.dumps(value)))
            else:
                parts.append((name, value))
        body, content_type = multipart(parts, ("file", "query", data))
        return self.call("POST", f"/api/v1/search/{example}", body=body, content_type=content_type)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/health")[0] == 200
        except MsearchError:
            return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def multipart(fields: list[tuple[str, object]], upload: tuple[str, str, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of text ``fields`` and one file ``(field, filename, bytes)``."""
    boundary = f"msearch-{secrets.token_hex(12)}"
    out = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
           for name, value in fields]
    name, filename, data = upload
    out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
               "Content-Type: application/octet-stream\r\n\r\n".encode())
    out += [data, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def describe(detail) -> str:
    """A server's error detail as one line: FastAPI's list of validation errors as
    ``where: what`` (``filters.modified_after: 'last tuesday' is not an ISO 8601 date ...``)."""
    if isinstance(detail, list) and all(isinstance(d, dict) and "msg" in d for d in detail):
        parts = []
        for d in detail:
            where = ".".join(str(x) for x in d.get("loc", ()) if x != "body")
            message = str(d["msg"]).removeprefix("Value error, ")
            parts.append(f"{where}: {message}" if where else message)
        return "; ".join(parts)
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
