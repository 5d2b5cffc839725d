"""The real operator as a child process, the way a person or a Pod runs it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from wedsync_testbed.controlplane import free_port


@dataclass
class OperatorProcess:
    """`wedsync-operator run` against one kubeconfig, with its own metrics and liveness
    ports and its output in a log file. Restartable, so tests can kill it mid-work."""

    kubeconfig: Path
    logs: Path
    args: tuple[str, ...] = ("-A", "--standalone")
    env: dict[str, str] = field(default_factory=dict)
    verbose: bool = True
    metrics_port: int = 0
    liveness_port: int = 0
    #: the ChangeFreeze webhook's port (the API server calls https://127.0.0.1:PORT/...)
    webhook_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __enter__(self) -> OperatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def log_file(self) -> Path:
        return self.logs / f"operator-{self.starts}.log"

    def start(self, timeout: float = 60.0) -> None:
        self.metrics_port, self.liveness_port = free_port(), free_port()
        if not self.webhook_port:  # kept across restarts: the webhook configuration names it
            self.webhook_port = free_port()
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wedsync_operator", "run", *self.args,
                 "--metrics-port", str(self.metrics_port),
                 "--liveness-port", str(self.liveness_port),
                 "--webhook-port", str(self.webhook_port),
                 *(["--verbose"] if self.verbose else [])],
                env={**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited with {self.process.returncode}:\n"
                                   + self.output()[-4000:])
            if self.healthy():
                return
            time.sleep(0.2)
        raise RuntimeError("operator not live within timeout:\n" + self.output()[-4000:])

    def healthy(self) -> bool:
        return self._get(f"http://127.0.0.1:{self.liveness_port}/healthz") is not None

    def liveness(self) -> str | None:
        return self._get(f"http://127.0.0.1:{self.liveness_port}/healthz")

    def metrics(self) -> str:
        text = self._get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        if text is None:
            raise RuntimeError("metrics endpoint did not answer")
        return text

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self, grace: float = 15.0) -> int | None:
        """SIGTERM (kopf's graceful stop), then SIGKILL after `grace`. Returns the exit code."""
        if self.process is None:
            return None
        proc, self.process = self.process, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill(proc)
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL: the operator dies mid-work with no chance to clean up."""
        if self.process is not None:
            self._kill(self.process)
            self.process = None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    @staticmethod
    def _get(url: str) -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if int(response.status) != 200:
                    return None
                return str(response.read().decode())
        except (urllib.error.URLError, OSError):
            return None
