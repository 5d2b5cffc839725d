"""S3 repositories for real: PostgreSQL 15 and pgBackRest against a real S3-compatible server
(SeaweedFS's S3 gateway, built from Go modules, `wedsync_testbed.s3`), over TLS with a
certificate from the server's own CA, which pgBackRest verifies — as a store with a private CA
is reached in production (`s3.caSecret`, `s3.port`).

The bed, its plan and the backup cycle are tests/integration/s3_fixtures.py's (bench/s3.py
times the same cycle; a test measures nothing). Scenarios: archive-push into S3;
full and incremental backups into S3 with a writer running; verify; the long-term S3
repository's expire; a wrong CA and a wrong key fail clearly; and — last, because it destroys
the first region — a restore from S3 alone, with the primary and the posix repository gone,
that holds every acknowledged write, those after the last backup included (from archived WAL).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pg_fixtures import STANZA, BackrestBed, skip_reason
from tests.integration.s3_fixtures import (
    AFTER_INCREMENTAL_ROWS,
    BASE_ROWS,
    S3Cycle,
    count,
    phase_counts,
    restore_from_s3_alone,
    s3_ca_files,
    start_cycle,
)
from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import pgbackrest as pb
from wedsync_testbed.postgres import chown, run
from wedsync_testbed.s3 import S3Server, binary, make_ca_and_certificate

_reason = skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """The S3 server (its binary built once per machine by tools/s3server/build.sh)."""
    try:
        weed = binary()
    except subprocess.CalledProcessError as error:  # pragma: no cover - build failure
        pytest.fail(f"building the S3 server failed: {error}")
    with S3Server(weed=weed, keep_logs_in=tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture(scope="module")
def s3_cycle(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Cycle]:
    """The bed after the cycle of `s3_fixtures.start_cycle`."""
    done = start_cycle(s3, tmp_path_factory.mktemp("pgbackrest-s3"))
    try:
        yield done
    finally:
        done.bed.close()


@pytest.fixture(scope="module")
def cycle(s3_cycle: S3Cycle) -> BackrestBed:
    return s3_cycle.bed


def test_the_incremental_backup_ran_while_a_writer_committed(s3_cycle: S3Cycle) -> None:
    assert s3_cycle.writer.errors == []
    assert len(s3_cycle.writer.acked) > 0


def test_the_configuration_names_the_store_its_port_and_ca_but_holds_no_key(
    cycle: BackrestBed, s3: S3Server
) -> None:
    text = cycle.config.read_text()
    n = cycle.number("offsite")
    assert (f"repo{n}-type=s3\nrepo{n}-path=/wedsync/offsite\nrepo{n}-s3-bucket={s3.bucket}\n"
            f"repo{n}-s3-endpoint=localhost\nrepo{n}-s3-region={s3.region}\n"
            f"repo{n}-s3-uri-style=path\nrepo{n}-storage-port={s3.port}\n"
            f"repo{n}-storage-ca-file={s3.ca_file}\n") in text
    assert s3.secret_key not in text
    assert s3.access_key not in text
    assert "verify-tls" not in text


def test_wal_and_backups_land_in_the_bucket(cycle: BackrestBed, s3: S3Server) -> None:
    offsite = cycle.info("offsite")
    assert [repo["key"] for repo in offsite["repo"]] == [cycle.number("offsite")]
    assert [repo["status"]["message"] for repo in offsite["repo"]] == ["ok"]
    backups = offsite["backup"]
    assert [b["type"] for b in backups] == ["full", "incr"]
    assert backups[1]["reference"] == [backups[0]["label"]]
    assert offsite["archive"][0]["max"] >= offsite["backup"][-1]["archive"]["stop"]
    # seen from the server, through its own S3 API: the objects pgBackRest wrote
    archived = [k for k in s3.list_keys(f"wedsync/offsite/archive/{STANZA}/")
                if k.endswith(".zst") and "/0000" in k]
    assert len(archived) >= 3
    backup_keys = s3.list_keys(f"wedsync/offsite/backup/{STANZA}/")
    for backup in backups:
        assert any(k.startswith(f"wedsync/offsite/backup/{STANZA}/{backup['label']}/pg_data/")
                   for k in backup_keys), backup["label"]
    # archive-push went to the long-term repository in S3 too, before any backup there
    assert s3.list_keys(f"wedsync/vault/archive/{STANZA}/")


def test_the_long_term_s3_repository_expires_down_to_its_count(
    cycle: BackrestBed, s3: S3Server
) -> None:
    labels = [cycle.backup("vault", "full") for _ in range(3)]
    assert [b["label"] for b in cycle.backups("vault")] == labels[1:]  # retentionCount 2
    cycle.pgbackrest(pb.expire_command(cycle.stanza, cycle.number("vault"),
                                       config=str(cycle.config)))
    assert [b["label"] for b in cycle.backups("vault")] == labels[1:]
    prefix = f"wedsync/vault/backup/{STANZA}/"
    stored = {k.removeprefix(prefix).split("/")[0] for k in s3.list_keys(prefix)
              if "/pg_data/" in k}
    assert stored == set(labels[1:])  # the expired backup's files are gone from the bucket
    # archive retention 1 (long-term): WAL older than the oldest kept backup's start is gone
    vault = cycle.info("vault")
    oldest_start = vault["backup"][0]["archive"]["start"]
    assert vault["archive"][0]["min"] >= oldest_start
    # the regular S3 repository is inside its time window: its expire keeps everything
    cycle.pgbackrest(pb.expire_command(cycle.stanza, cycle.number("offsite"),
                                       config=str(cycle.config)))
    assert [b["type"] for b in cycle.backups("offsite")] == ["full", "incr"]


def _other_config(bed: BackrestBed, name: str, **render: Any) -> Path:
    path = bed.work / name
    path.write_text(pb.render_config(bed.spec, repo_paths=bed.repo_paths,
                                     lock_path=str(bed.work / "lock"), **render))
    chown(path)
    return path


def test_an_untrusted_certificate_or_a_wrong_key_fails_clearly(
    cycle: BackrestBed, s3: S3Server
) -> None:
    """The full backup Job's command into S3 fails, and says why, when the CA bundle is not
    the one that signed the store's certificate or when the keys are wrong."""
    offsite = cycle.number("offsite")
    before = [b["label"] for b in cycle.backups("offsite")]

    def full_backup(config: Path, env: dict[str, str]) -> str:
        failed = run(pb.backup_command(cycle.stanza, "full", offsite, config=str(config)),
                     check=False, env=env)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output
        return output

    stranger = cycle.work / "stranger-ca"
    make_ca_and_certificate(stranger, name="some-other")
    wrong_ca = _other_config(cycle, "wrong-ca.conf",
                             s3_ca_files={"offsite": str(stranger / "ca.crt"),
                                          "vault": str(stranger / "ca.crt")})
    output = full_backup(wrong_ca, cycle.env)
    assert f"unable to verify certificate presented by 'localhost:{s3.port}'" in output, output

    wrong_secret = {**cycle.env, f"PGBACKREST_REPO{offsite}_S3_KEY_SECRET": "not-the-secret"}
    output = full_backup(cycle.config, wrong_secret)
    assert "HTTP request failed with 403 (Forbidden)" in output, output
    assert "SignatureDoesNotMatch" in output, output
    assert "not-the-secret" not in output

    unknown_key = {**cycle.env, f"PGBACKREST_REPO{offsite}_S3_KEY": "WEDSYNCUNKNOWN"}
    output = full_backup(cycle.config, unknown_key)
    assert "HTTP request failed with 403 (Forbidden)" in output, output
    assert "InvalidAccessKeyId" in output, output
    # nothing was written, and the right CA and keys still work
    assert [b["label"] for b in cycle.backups("offsite")] == before


def test_host_style_addressing_reads_the_same_repository(
    cycle: BackrestBed, s3: S3Server
) -> None:
    """`uriStyle: host` (the default, AWS's): the bucket goes in the Host header. No DNS name
    resolves `<bucket>.localhost` here, so the commands connect to localhost
    (``PGBACKREST_REPO<N>_STORAGE_HOST``, a test-only stand-in for that DNS record) and send
    Host `<bucket>.localhost`, which the server maps to the bucket."""
    n = cycle.number("offsite")
    wire = cycle.spec.wire()
    for repo in wire["backups"]["repositories"]:
        if repo["type"] == "s3":
            repo["s3"]["uriStyle"] = "host"
    host_style = RecoveryPlanSpec.model_validate(wire)
    config = cycle.work / "host-style.conf"
    config.write_text(pb.render_config(
        host_style, repo_paths=cycle.repo_paths, lock_path=str(cycle.work / "lock"),
        s3_ca_files=s3_ca_files(s3)))
    chown(config)
    assert f"repo{n}-s3-uri-style=host\n" in config.read_text()
    dns_stand_in = {f"PGBACKREST_REPO{n}_STORAGE_HOST": s3.endpoint}

    seen = json.loads(cycle.pgbackrest(pb.info_command(cycle.stanza, n, config=str(config)),
                                       env=dns_stand_in))
    assert [b["label"] for b in seen[0]["backup"]] == \
        [b["label"] for b in cycle.backups("offsite")]
    cycle.pgbackrest(pb.verify_command(cycle.stanza, n, config=str(config)), env=dns_stand_in)


def test_the_server_refuses_plain_http_and_untrusted_clients(s3: S3Server) -> None:
    """The store is TLS-only and its CA is private: what pgBackRest is up against in
    production, and why `s3.caSecret` exists."""
    plain = http.client.HTTPConnection("127.0.0.1", s3.port, timeout=10)
    try:
        plain.request("GET", "/")
        assert plain.getresponse().status == 400  # Go's answer to HTTP on a TLS port
    finally:
        plain.close()
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        s3.request("GET", "/", ca_file=Path(ssl.get_default_verify_paths().openssl_cafile))
    assert s3.request("GET", "/", secret_key="wrong")[0] == 403
    assert s3.request("GET", "/")[0] == 200


def test_the_s3_server_dies_with_the_process_that_started_it(s3: S3Server) -> None:
    """A test run that dies leaves no server behind (parent-death signal, own session)."""
    assert s3.weed is not None
    owner = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time\n"
            "from pathlib import Path\n"
            "from wedsync_testbed.s3 import S3Server\n"
            "server = S3Server(name='s3-orphan', weed=Path(sys.argv[1]))\n"
            "server.start()\n"
            "assert server.process is not None\n"
            "print(server.process.pid, server.workdir, flush=True)\n"
            "time.sleep(600)\n"), str(s3.weed)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert owner.stdout is not None
    line = owner.stdout.readline().split()
    assert line, "the owner process did not start a server"
    pid, workdir = int(line[0]), Path(line[1])
    try:
        assert os.getpgid(pid) == pid  # its own session and process group
        owner.kill()
        owner.wait(10)
        deadline = time.monotonic() + 30
        while _running(pid):
            assert time.monotonic() < deadline, f"weed {pid} outlived its owner"
            time.sleep(0.1)
    finally:
        owner.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_restore_from_s3_alone_when_the_first_region_is_gone(
    s3_cycle: S3Cycle, tmp_path: Path
) -> None:
    """Runs last: the primary and repository 1 are destroyed."""
    pg = s3_cycle.bed.primary
    expected = phase_counts(pg)
    acked = {f"writer-{n}" for n in s3_cycle.writer.acked}
    assert expected["writer"] == len(acked) > 0
    moved = count(pg, "notes = 'moved to June'")
    last = pg.execute("SELECT max(id) FROM bookings", dbname="wedsync")

    restored = restore_from_s3_alone(s3_cycle.bed, tmp_path)
    with restored:  # PostgreSQL replays WAL fetched from S3 (archive-get), then promotes
        restored.wait_writable(timeout=300)
        assert phase_counts(restored) == expected
        assert expected["base"] == BASE_ROWS
        assert expected["after-incr"] == AFTER_INCREMENTAL_ROWS
        writers = set(restored.execute(
            "SELECT couple FROM bookings WHERE phase = 'writer'", dbname="wedsync").split())
        assert writers == acked  # every acknowledged write, none invented
        assert count(restored, "notes = 'moved to June'") == moved
        assert restored.execute("SELECT max(id) FROM bookings", dbname="wedsync") == last
        assert restored.execute("SHOW archive_mode") == "off"
