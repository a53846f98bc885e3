"""A real RFC 3161 timestamp authority for tests, built on the `openssl` command line.

`make_tsa_pki(folder, name)` makes a root CA and a TSA certificate (ECDSA P-256, the TSA
certificate with ``extendedKeyUsage=critical,timeStamping``) and an openssl config for
``openssl ts -reply``. `running_tsa(folder, name)` serves it over HTTP on a free
127.0.0.1 port (http.server in a thread): a POST of a TimeStampReq
(``application/timestamp-query``) is answered with ``openssl ts -reply`` output.

Fault paths, for the client's error handling (all under the same server):
  /fault/500         HTTP 500
  /fault/garbage     200 with bytes that are not a TimeStampResp
  /fault/rejection   a DER TimeStampResp with status rejection (2) and no token
  /fault/wrong-nonce a good token for the same imprint but another nonce
  /fault/wrong-imprint a good token for other data
  /fault/slow        answers after 1.5 s (for timeouts)
  /fault/huge        200 with 300 KiB of junk
  /fault/<other>     HTTP 404

Use the fixtures from a test module with ``from tsa_server import tsa, other_tsa``.
A missing openssl FAILS the test (require_tool), never skips it.
"""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import require_tool

# a DER TimeStampResp: SEQUENCE { PKIStatusInfo SEQUENCE { INTEGER 2 (rejection) } }
REJECTION_RESPONSE = bytes.fromhex("30053003020102")

_TSA_CONFIG = """\
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
dir = {dir}
serial = $dir/tsaserial
crypto_device = builtin
signer_cert = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.99.1
other_policies = 1.3.6.1.4.1.57264.99.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

_EXTENSIONS = """\
[ root_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[ tsa_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


class TsaEndpoint(NamedTuple):
    """What a test needs: the URL to POST to and the certificates to trust."""

    url: str
    root_cert_path: Path
    tsa_cert_path: Path


@dataclass(frozen=True)
class TsaPki:
    folder: Path
    root_cert: Path
    tsa_cert: Path
    config: Path


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    """Run openssl; a failure raises with its stderr (the test then fails with the reason)."""
    exe = require_tool("openssl")
    proc = subprocess.run([exe, *args], input=stdin, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def make_tsa_pki(folder: Path, name: str = "Affidavit Test") -> TsaPki:
    """A root CA and a TSA certificate signed by it, plus the `openssl ts` config."""
    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "ext.cnf"
    ext.write_text(_EXTENSIONS)
    root_key, root_cert = folder / "root.key", folder / "root.pem"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(root_key), "-out", str(root_cert), "-days", "3650", "-sha256",
            "-subj", f"/O={name}/CN={name} Root CA", "-config", str(ext), "-extensions", "root_ext")
    tsa_key, tsa_csr, tsa_cert = folder / "tsa.key", folder / "tsa.csr", folder / "tsa.pem"
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(tsa_key), "-out", str(tsa_csr), "-subj", f"/O={name}/CN={name} TSA")
    openssl("x509", "-req", "-in", str(tsa_csr), "-CA", str(root_cert), "-CAkey", str(root_key),
            "-set_serial", "4242", "-days", "1825", "-sha256", "-out", str(tsa_cert),
            "-extfile", str(ext), "-extensions", "tsa_ext")
    (folder / "tsaserial").write_text("01\n")
    config = folder / "tsa.cnf"
    config.write_text(_TSA_CONFIG.format(dir=folder))
    return TsaPki(folder, root_cert, tsa_cert, config)


def pki_of(endpoint: TsaEndpoint) -> TsaPki:
    """The PKI behind a running TSA (to sign replies directly, without HTTP)."""
    folder = endpoint.root_cert_path.parent
    return TsaPki(folder, endpoint.root_cert_path, endpoint.tsa_cert_path, folder / "tsa.cnf")


def _imprint_of_query(query: bytes) -> bytes:
    from rfc3161_client import _rust

    imprint: bytes = _rust.parse_timestamp_request(query).message_imprint.message
    return imprint


def reply(pki: TsaPki, query: bytes) -> bytes:
    """`openssl ts -reply` for one DER TimeStampReq."""
    with tempfile.TemporaryDirectory(dir=pki.folder) as tmp:
        q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
        q.write_bytes(query)
        openssl("ts", "-reply", "-config", str(pki.config), "-queryfile", str(q), "-out", str(r))
        return r.read_bytes()


def query_for_digest(digest: bytes) -> bytes:
    """A fresh TimeStampReq (its own random nonce, certReq) for a SHA-256 digest."""
    return openssl("ts", "-query", "-digest", digest.hex(), "-sha256", "-cert")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _TsaHttpServer

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/timestamp-reply") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout tests): nothing to answer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        query = self.rfile.read(length)
        pki = self.server.pki
        path = self.path.rstrip("/")
        try:
            if path == "/fault/500":
                self._send(500, b"internal error", "text/plain")
            elif path == "/fault/garbage":
                self._send(200, b"<html>not a timestamp</html>")
            elif path == "/fault/rejection":
                self._send(200, REJECTION_RESPONSE)
            elif path == "/fault/wrong-nonce":
                self._send(200, reply(pki, query_for_digest(_imprint_of_query(query))))
            elif path == "/fault/wrong-imprint":
                self._send(200, reply(pki, query_for_digest(hashlib.sha256(b"other data").digest())))
            elif path == "/fault/slow":
                time.sleep(1.5)
                self._send(200, reply(pki, query))
            elif path == "/fault/huge":
                self._send(200, b"\x30" * (300 * 1024))
            elif path.startswith("/fault/"):
                self._send(404, b"no such fault", "text/plain")
            elif self.headers.get("Content-Type") != "application/timestamp-query":
                self._send(400, b"expected application/timestamp-query", "text/plain")
            else:
                self._send(200, reply(pki, query))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except (AssertionError, OSError) as e:
            self._send(500, str(e).encode(), "text/plain")


class _TsaHttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, pki: TsaPki) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pki = pki


@contextmanager
def running_tsa(folder: Path, name: str = "Affidavit Test") -> Iterator[TsaEndpoint]:
    """A TSA with a fresh PKI under ``folder``, served until the block ends."""
    pki = make_tsa_pki(folder, name)
    server = _TsaHttpServer(pki)
    thread = threading.Thread(target=server.serve_forever, name=f"tsa-{name}", daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield TsaEndpoint(f"http://127.0.0.1:{port}/", pki.root_cert, pki.tsa_cert)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsaEndpoint]:
    """The trusted test TSA: (url, root_cert_path, tsa_cert_path)."""
    with running_tsa(tmp_path_factory.mktemp("tsa"), "Affidavit Test") as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def other_tsa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsaEndpoint]:
    """A second TSA with its own root, which tests do not trust."""
    with running_tsa(tmp_path_factory.mktemp("tsa-other"), "Untrusted") as endpoint:
        yield endpoint
