"""A real Prometheus (and promtool) built from Go modules, for the alert and dashboard tests.

`binaries()` builds prometheus and promtool once per machine (tools/prometheus/build.sh, cached
by version). `PrometheusServer` runs prometheus as a local process on loopback with a scrape
configuration and rule files of the test's choosing, and answers through its HTTP API
(`/api/v1/query`, `/api/v1/alerts`, `/api/v1/rules`, `/api/v1/targets`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wedsync_testbed.controlplane import REPO_ROOT, free_port
from wedsync_testbed.postgres import die_with_parent

BUILD_SCRIPT = REPO_ROOT / "tools" / "prometheus" / "build.sh"


class PrometheusError(RuntimeError):
    """Prometheus failed to start, or its API answered with an error."""


@dataclass(frozen=True)
class Binaries:
    """Paths of prometheus and promtool built by tools/prometheus/build.sh."""

    folder: Path

    @property
    def prometheus(self) -> Path:
        return self.folder / "prometheus"

    @property
    def promtool(self) -> Path:
        return self.folder / "promtool"


def binaries(build: bool = True) -> Binaries:
    """`$WEDSYNC_PROMETHEUS_BIN`, or the build cache (built now when `build` is true and they
    are missing; the build does nothing when they are there)."""
    override = os.environ.get("WEDSYNC_PROMETHEUS_BIN")
    if override:
        return Binaries(Path(override))
    if not build:
        raise PrometheusError("set WEDSYNC_PROMETHEUS_BIN or allow the build")
    out = subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return Binaries(Path(out.strip().splitlines()[-1]))


@dataclass
class PrometheusServer:
    """One prometheus process on 127.0.0.1 with its own folder (config, rules, data, log).

    `scrape_configs` and `rule_groups` are written as Prometheus reads them; the global scrape
    and evaluation intervals are `interval`. Use as a context manager or call start/stop.
    """

    bins: Binaries
    root: Path
    scrape_configs: list[dict[str, Any]]
    rule_groups: list[dict[str, Any]] = field(default_factory=list)
    interval: str = "2s"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "prometheus.log"

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        rules = self.root / "rules.yaml"
        rules.write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
        config = self.root / "prometheus.yaml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval,
                       "scrape_timeout": self.interval},
            "rule_files": [str(rules)],
            "scrape_configs": self.scrape_configs,
        }, sort_keys=False))
        return config

    def check_config(self) -> str:
        """`promtool check config` (rules included): its output; raises when it fails."""
        config = self.write_config()
        result = subprocess.run([str(self.bins.promtool), "check", "config", str(config)],
                                capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise PrometheusError(f"promtool check config failed:\n{result.stdout}"
                                  f"\n{result.stderr}")
        return result.stdout

    def start(self, timeout: float = 120.0) -> None:
        config = self.write_config()
        self.port = self.port or free_port()
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bins.prometheus), f"--config.file={config}",
                 f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--web.enable-lifecycle", "--log.level=info"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.process.returncode}:\n"
                                      + self.output()[-4000:])
            if self._get("/-/ready") is not None:
                return
            time.sleep(0.3)
        raise PrometheusError("prometheus not ready within timeout:\n" + self.output()[-4000:])

    def reload(self) -> None:
        """Writes the configuration again (scrape configs and rules as they are now) and has
        the running Prometheus load it (`POST /-/reload`)."""
        self.write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            if int(response.status) != 200:
                raise PrometheusError(f"reload answered {response.status}")

    def stop(self, grace: float = 20.0) -> None:
        if self.process is None:
            return
        proc, self.process = self.process, None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # ---- the HTTP API ------------------------------------------------------------------------
    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>: the `data` of a success; raises with Prometheus's error."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}",
                                        timeout=30) as response:
                body = json.loads(response.read().decode())
        except urllib.error.HTTPError as error:
            body = json.loads(error.read().decode() or "{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('errorType')}: "
                                  f"{body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query: the vector's samples (`metric` labels and `value`)."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr}: a {data['resultType']}, not a vector")
        result: list[dict[str, Any]] = data["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert Prometheus holds now (pending and firing), with its labels."""
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def targets(self) -> list[dict[str, Any]]:
        targets: list[dict[str, Any]] = self.api("targets")["activeTargets"]
        return targets

    def _get(self, path: str) -> str | None:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as response:
                return str(response.read().decode()) if int(response.status) == 200 else None
        except (urllib.error.URLError, OSError):
            return None
