"""Real PostgreSQL instances for tests, benchmarks and the local run.

A `PostgresInstance` is one PostgreSQL server from the Debian packages, listening on a free
loopback port and on a unix socket in its own folder. PostgreSQL refuses to run as root, so
when the caller is root every PostgreSQL (and pgBackRest) process runs as the `postgres` user
and the instance's folder belongs to that user; a non-root caller runs them as itself.

Every server is started in its own session with a parent-death signal, so a test run that dies
leaves no server behind; `stop()` (and leaving the `with` block) ends it and removes its folder
unless `WEDSYNC_KEEP_PG` is set. Server output goes to ``logs/postgres.log`` in the folder and
is copied to `keep_logs_in` (e.g. a pytest tmp_path) on teardown.

`make_standby(primary)` clones a running primary with ``pg_basebackup -R`` into a streaming
replica: the pair the failover tests promote.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PG_BIN = Path(os.environ.get("WEDSYNC_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"

#: Settings for a small, fast test server; the caller's settings override them.
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "40",
    "shared_buffers": "32MB",
    "fsync": "off",  # the kernel keeps the data when a test kills the server
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] ",
}

StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT,
}


class PostgresError(RuntimeError):
    """A PostgreSQL tool failed or a server did not become ready."""


def os_user() -> str | None:
    """The user PostgreSQL processes run as: `postgres` when we are root, else ourselves."""
    return SUPERUSER if os.geteuid() == 0 else None


def missing_binaries(bin_dir: Path = PG_BIN) -> str | None:
    """Why PostgreSQL cannot be started here, or None when it can."""
    for tool in ("initdb", "postgres", "pg_ctl", "psql", "pg_basebackup", "pg_isready"):
        if not os.access(bin_dir / tool, os.X_OK):
            return f"PostgreSQL binary {bin_dir / tool} is missing (apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root but there is no {SUPERUSER!r} user to run PostgreSQL as"
    return None


def owned_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new folder the PostgreSQL user owns (under /tmp unless `parent` is given)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(0o755)
    chown(path)
    return path


def chown(path: Path) -> None:
    """Gives `path` to the PostgreSQL user when we are root (no-op otherwise)."""
    user = os_user()
    if user is not None:
        shutil.chown(path, user, user)


def run(argv: Sequence[str], *, input: str | None = None, timeout: float = 300,
        check: bool = True, env: Mapping[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Runs a PostgreSQL or pgBackRest tool as the PostgreSQL user and captures its output;
    `PostgresError` with the output when it fails and `check` is set."""
    result = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, timeout=timeout,
        check=False, user=os_user(), env={**os.environ, **(env or {})},
        cwd=cwd or "/", start_new_session=True, preexec_fn=die_with_parent,
    )
    if check and result.returncode != 0:
        raise PostgresError(
            f"{' '.join(argv)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def die_with_parent() -> None:
    """`preexec_fn` for long-running children: SIGKILL them when the process that started them
    dies (the signal survives the switch to the PostgreSQL user, which happens first)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresInstance:
    """One PostgreSQL server on loopback. Use as a context manager or call start/stop.

    `start()` runs initdb first when the data directory holds no cluster; a data directory that
    was filled otherwise (pg_basebackup, a pgBackRest restore) is started as it is.
    """

    name: str = "pg"
    workdir: Path | None = None
    bin_dir: Path = PG_BIN
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    keep_logs_in: Path | None = None
    #: Extra environment of the server (e.g. the S3 keys its archive_command needs).
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _own_workdir: bool = False

    # ---- paths -------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        if self.workdir is None:
            self.workdir = owned_dir(f"wedsync-pg-{self.name}-")
            self._own_workdir = True
        return self.workdir

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "postgres.log"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq connection string over TCP (what a replica or a client in a test uses)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    # ---- lifecycle ---------------------------------------------------------------------
    def __enter__(self) -> PostgresInstance:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prepare(self) -> None:
        """Creates the instance folders (data left empty), owned by the PostgreSQL user."""
        for folder in (self.root, self.socket_dir, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
            chown(folder)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700)
            chown(self.data_dir)

    def init(self) -> None:
        """initdb with data checksums, trust authentication on loopback and the socket."""
        self.prepare()
        run([self.tool("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
             "-E", "UTF8", "--locale=C", "--data-checksums", "--no-sync"])

    def start(self, timeout: float = 60.0) -> None:
        """Starts the server (initdb first if needed) and waits until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.prepare()
        if not self.initialized:
            self.init()
        for attempt in range(3):
            if not self.port or attempt:
                self.port = free_port()
            self._spawn()
            try:
                self._wait_ready(timeout)
                return
            except PostgresError:
                if self.process is not None and self.process.poll() is not None and \
                        "Address already in use" in self.log_tail() and attempt < 2:
                    continue  # lost a race for the port: try another
                self.stop(mode="immediate")
                raise

    def _spawn(self) -> None:
        merged = {**BASE_SETTINGS, **self.settings, "port": str(self.port),
                  "unix_socket_directories": str(self.socket_dir)}
        argv = [self.tool("postgres"), "-D", str(self.data_dir)]
        for key, value in merged.items():
            argv += ["-c", f"{key}={value}"]
        log = open(self.log_file, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.root, start_new_session=True, preexec_fn=die_with_parent,
            user=os_user(), env={**os.environ, **self.env},
        )
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise PostgresError(f"{self.name}: postgres exited with "
                                    f"{self.process.returncode}\n{self.log_tail()}")
            ready = run([self.tool("pg_isready"), "-q", "-h", str(self.socket_dir),
                         "-p", str(self.port), "-U", SUPERUSER], check=False, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresError(f"{self.name}: not accepting connections within {timeout:.0f}s\n"
                            f"{self.log_tail()}")

    def stop(self, mode: StopMode = "fast", timeout: float = 30.0) -> None:
        """Shuts the server down (`fast`: disconnect clients, checkpoint); SIGKILL if it
        does not stop within `timeout` seconds."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, _STOP_SIGNALS[mode])
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._reap_group(proc.pid)
        self.process = None

    def kill(self) -> None:
        """SIGKILLs the server and all its backends at once: a lost primary."""
        proc = self.process
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        self._reap_group(proc.pid)
        self.process = None

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Makes sure no process of the server's session outlives it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def close(self) -> None:
        """Stops the server, keeps its logs where asked and removes its folder."""
        try:
            self.stop()
        finally:
            if self.keep_logs_in is not None and self.workdir is not None \
                    and self.log_dir.exists():
                target = self.keep_logs_in / f"postgres-{self.name}"
                shutil.copytree(self.log_dir, target, dirs_exist_ok=True)
            if self._own_workdir and self.workdir is not None and \
                    not os.environ.get("WEDSYNC_KEEP_PG"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    # ---- operations --------------------------------------------------------------------
    def psql(self, *args: str, dbname: str = "postgres", input: str | None = None,
             timeout: float = 120) -> str:
        """Runs psql against this server (unaligned, tuples only, stop on error)."""
        argv = [self.tool("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.socket_dir), "-p", str(self.port), "-U", SUPERUSER,
                "-d", dbname, *args]
        return run(argv, input=input, timeout=timeout).stdout

    def execute(self, sql: str, dbname: str = "postgres") -> str:
        """Runs SQL and returns psql's output, stripped (`|`-separated columns)."""
        return self.psql("-c", sql, dbname=dbname).strip()

    def in_recovery(self) -> bool:
        return self.execute("SELECT pg_is_in_recovery()") == "t"

    def wait_writable(self, timeout: float = 60.0) -> None:
        """Waits until recovery has finished and the server accepts writes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.in_recovery():
                return
            time.sleep(0.1)
        raise PostgresError(f"{self.name}: still in recovery after {timeout:.0f}s\n"
                            f"{self.log_tail()}")

    def promote(self, timeout: float = 60.0) -> None:
        """Promotes a standby and waits until it accepts writes."""
        run([self.tool("pg_ctl"), "promote", "-D", str(self.data_dir), "-w",
             "-t", str(int(timeout))], timeout=timeout + 10)
        self.wait_writable(timeout)

    def switch_wal(self) -> str:
        """Closes the current WAL segment (so it is archived); returns its name."""
        return self.execute("SELECT pg_walfile_name(pg_switch_wal())")

    def wait_archived(self, wal: str, timeout: float = 60.0) -> None:
        """Waits until `wal` (or a later segment) has been archived successfully."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            if last and last[:24] >= wal[:24]:
                return
            time.sleep(0.1)
        raise PostgresError(f"{self.name}: WAL {wal} not archived within {timeout:.0f}s; "
                            f"pg_stat_archiver: {self.execute('TABLE pg_stat_archiver')}\n"
                            f"{self.log_tail()}")


def make_standby(primary: PostgresInstance, name: str | None = None, *,
                 settings: Mapping[str, str] | None = None,
                 keep_logs_in: Path | None = None, start: bool = True) -> PostgresInstance:
    """A streaming replica of a running `primary`: pg_basebackup -R over loopback TCP, with
    `application_name` set to the replica's name (visible in pg_stat_replication)."""
    standby = PostgresInstance(name=name or f"{primary.name}-standby",
                               bin_dir=primary.bin_dir,
                               settings=dict(settings or primary.settings),
                               keep_logs_in=keep_logs_in)
    standby.prepare()
    try:
        run([primary.tool("pg_basebackup"), "-d",
             f"{primary.conninfo()} application_name={standby.name}",
             "-D", str(standby.data_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync"],
            timeout=600)
        if start:
            standby.start()
    except BaseException:
        standby.close()
        raise
    return standby
