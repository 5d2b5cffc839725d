"""A real S3-compatible object store for tests: SeaweedFS's S3 gateway, on loopback, over TLS.

`S3Server` runs one ``weed server`` process (master, volume server, filer and S3 gateway)
built from Go modules by ``tools/s3server/build.sh``. Like a production store with a private
CA, it serves HTTPS only, with a certificate for ``localhost``/``127.0.0.1`` signed by a CA of
its own (`ca_file`), so a client that does not trust that CA is refused; it has one identity
with a random access key pair (`access_key`, `secret_key`) and one bucket, created through the
S3 API (signature v4) once the gateway answers. Every port is a free loopback port.

Both URI styles are served: path style (``https://localhost:<port>/<bucket>/<key>``) and
virtual-host style, where the request's Host is ``<bucket>.localhost``. Nothing resolves that
name on this machine, so a host-style client connects to ``localhost`` and sends that Host
(pgBackRest: ``repoN-storage-host=localhost``); the certificate names ``localhost``.

The process runs in its own session with a parent-death signal, so a test run that dies leaves
no server behind; `stop()` (and leaving the `with` block) ends it and removes its folder unless
`WEDSYNC_KEEP_S3` is set. Its log is copied to `keep_logs_in` on teardown.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tools" / "s3server" / "build.sh"
#: The host name the server's certificate is for; clients connect to it.
HOST = "localhost"
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Error(RuntimeError):
    """The S3 server failed to start, or a request to it failed."""


def binary(build: bool = True) -> Path:
    """The ``weed`` binary: `$WEDSYNC_S3SERVER_BIN` (a folder), or the build cache (built now
    when `build` is true and it is missing; the build does nothing when it is there)."""
    override = os.environ.get("WEDSYNC_S3SERVER_BIN")
    if override:
        return Path(override) / "weed"
    if not build:
        raise S3Error("set WEDSYNC_S3SERVER_BIN or allow the build")
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return Path(out.strip().splitlines()[-1]) / "weed"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def make_ca_and_certificate(folder: Path, name: str = "wedsync-s3") -> None:
    """``ca.crt``/``ca.key`` (a CA named `name`) and ``server.crt``/``server.key`` for
    localhost and 127.0.0.1, signed by it. Certificates are world-readable (clients running as
    another user read the CA); keys are not."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", f"/CN={name}-ca")
    (folder / "server.ext").write_text(f"subjectAltName=DNS:{HOST},IP:127.0.0.1\n"
                                       "extendedKeyUsage=serverAuth\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", f"/CN={HOST}")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext")
    for path in folder.iterdir():
        path.chmod(0o600 if path.suffix == ".key" else 0o644)


# ---- signature v4 ------------------------------------------------------------------------------
def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sign_v4(method: str, host: str, path: str, query: Mapping[str, str], payload_sha256: str,
            *, access_key: str, secret_key: str, region: str,
            now: datetime) -> dict[str, str]:
    """The headers that authenticate one S3 request with AWS signature version 4 (header form,
    service ``s3``): Host, X-Amz-Date, X-Amz-Content-Sha256 and Authorization."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    headers = {"host": host, "x-amz-content-sha256": payload_sha256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(query.items()))
    canonical = "\n".join([
        method, urllib.parse.quote(path, safe="/-_.~"), canonical_query,
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_sha256,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "Host": host,
        "X-Amz-Date": stamp,
        "X-Amz-Content-Sha256": payload_sha256,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                         f"SignedHeaders={signed}, Signature={signature}",
    }


@dataclass
class S3Server:
    """One SeaweedFS server with its S3 gateway on loopback, HTTPS only. Use as a context
    manager or call start/stop."""

    name: str = "s3"
    bucket: str = "wedsync-dr"
    region: str = "eu-central-1"
    workdir: Path | None = None
    weed: Path | None = None
    keep_logs_in: Path | None = None
    access_key: str = field(default_factory=lambda: "WEDSYNC" + secrets.token_hex(6).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _own_workdir: bool = False

    # ---- paths -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"wedsync-{self.name}-"))
            self.workdir.chmod(0o755)
            self._own_workdir = True
        return self.workdir

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def ca_file(self) -> Path:
        """The PEM CA bundle a client must trust (what `s3.caSecret` holds in production)."""
        return self.pki / "ca.crt"

    @property
    def log_file(self) -> Path:
        return self.root / "weed.log"

    @property
    def endpoint(self) -> str:
        """The host name clients use (`s3.endpoint`); the port is `port`."""
        return HOST

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        """Starts the server, waits until the S3 gateway answers signed requests over TLS and
        creates the bucket."""
        if self.process is not None and self.process.poll() is None:
            return
        if self.weed is None:
            self.weed = binary()
        make_ca_and_certificate(self.pki)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "wedsync-backup",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}))
        config.chmod(0o600)
        for attempt in range(3):
            self._spawn(config)
            try:
                self._wait_ready(timeout)
                break
            except S3Error:
                lost_port_race = self.process is not None and \
                    self.process.poll() is not None and "address already in use" in \
                    self.log_tail().lower()
                self.stop(keep_folder=True)
                if lost_port_race and attempt < 2:
                    continue
                self._remove_folder()
                raise
        try:
            self.create_bucket(self.bucket)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, config: Path) -> None:
        assert self.weed is not None
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        ports = {flag: free_port() for flag in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
        self.port = ports["s3.port"]
        argv = [
            str(self.weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={data}", "-filer", "-s3",
            *(f"-{flag}={port}" for flag, port in ports.items()),
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=64",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.domainName={HOST}",
            f"-s3.cert.file={self.pki / 'server.crt'}",
            f"-s3.key.file={self.pki / 'server.key'}",
            f"-s3.config={config}", "-s3.autoCreateBucket=false",
            f"-s3.localSocket={self.root / 's3.sock'}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
        ]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root, start_new_session=True, preexec_fn=_die_with_parent,
        )
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        """Until a signed ListBuckets over TLS answers 200 (master, volume server, filer and
        gateway all up)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise S3Error(f"{self.name}: weed exited with {self.process.returncode}\n"
                              f"{self.log_tail()}")
            try:
                status, body = self.request("GET", "/")
                if status == 200:
                    return
                last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as error:
                last = str(error)
            time.sleep(0.2)
        raise S3Error(f"{self.name}: S3 gateway not ready within {timeout:.0f}s ({last})\n"
                      f"{self.log_tail()}")

    def stop(self, grace: float = 15.0, *, keep_folder: bool = False) -> None:
        """Ends the server (SIGTERM, then SIGKILL after `grace` seconds), keeps its log where
        asked and removes its folder."""
        proc = self.process
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
            self.process = None
        if self.keep_logs_in is not None and self.workdir is not None and \
                self.log_file.exists():
            shutil.copy(self.log_file, self.keep_logs_in / f"{self.name}-weed.log")
        if not keep_folder:
            self._remove_folder()

    def _remove_folder(self) -> None:
        if self._own_workdir and self.workdir is not None and \
                not os.environ.get("WEDSYNC_KEEP_S3"):
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.workdir is None or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # ---- S3 API ------------------------------------------------------------------------
    def request(self, method: str, path: str, query: Mapping[str, str] | None = None,
                *, access_key: str | None = None, secret_key: str | None = None,
                ca_file: Path | None = None) -> tuple[int, bytes]:
        """One signed request without a body over HTTPS, verifying the server certificate
        against `ca_file` (default: this server's CA); returns (status, body)."""
        context = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        host = f"{HOST}:{self.port}"
        headers = sign_v4(method, host, path, query or {}, _EMPTY_SHA256,
                          access_key=access_key or self.access_key,
                          secret_key=secret_key or self.secret_key,
                          region=self.region, now=datetime.now(UTC))
        target = urllib.parse.quote(path, safe="/-_.~")
        if query:
            target += "?" + urllib.parse.urlencode(sorted(query.items()),
                                                   quote_via=urllib.parse.quote)
        conn = http.client.HTTPSConnection(HOST, self.port, context=context, timeout=30)
        try:
            conn.request(method, target, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def create_bucket(self, bucket: str) -> None:
        """CreateBucket (path style); an existing bucket of ours is fine."""
        status, body = self.request("PUT", f"/{bucket}")
        if status != 200 and b"BucketAlreadyOwnedByYou" not in body:
            raise S3Error(f"creating bucket {bucket} failed: HTTP {status}: {body[:500]!r}")

    def list_keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        """Every object key under `prefix` in the bucket (ListObjectsV2, all pages)."""
        keys: list[str] = []
        token: str | None = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token is not None:
                query["continuation-token"] = token
            status, body = self.request("GET", f"/{bucket or self.bucket}", query)
            if status != 200:
                raise S3Error(f"listing {prefix!r} failed: HTTP {status}: {body[:500]!r}")
            root = ET.fromstring(body)
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            keys += [k.text or "" for k in root.iter(f"{ns}Key")]
            more = root.findtext(f"{ns}IsTruncated") == "true"
            token = root.findtext(f"{ns}NextContinuationToken")
            if not more or not token:
                return keys
