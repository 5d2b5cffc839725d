"""The health of a DisasterRecoveryPlan's regions: probed by the failover detector, reported as
the plan's PrimaryHealthy and StandbysReady conditions and as metrics.

`probe_plan` makes one real SQL round trip to every region's database within the plan's
probe timeout, concurrently: the region serving writes (`status.currentPrimary`, else the
declared Primary) must answer; a standby must answer, be in recovery, and its replay lag is
measured against the primary's flush position.

Each region's connection comes from its connection Secret in its own cluster; when that
cluster does not answer, the connection last read is used (`failover.region_connection`), so
the database is still probed: a lost API server is not a lost database. A region whose
configuration is wrong (kubeconfig Secret missing or unusable, connection Secret missing or
without its keys) is *Misconfigured*: it is reported with what to fix and never counts as a
failed probe, so a typo cannot start a failover.

`conditions` is pure. Its messages carry no figures that change at every probe (the lag goes
to the metrics), so a steady plan's status is not rewritten at each probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, replace
from typing import Any, Literal

from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import database
from wedsync_operator.api.recovery import RecoveryPlanSpec, Region
from wedsync_operator.domain.connection import Connection
from wedsync_operator.domain.failover import data_loss
from wedsync_operator.kube.regions import RegionClients, RegionError
from wedsync_operator.services import failover
from wedsync_operator.services.scaling import condition

#: Up: answers. Down: the database does not answer (counts towards a failover). Misconfigured:
#: the plan's references are wrong. Unknown: the region's cluster does not answer and its
#: database address is not known yet (neither counts: only a database seen can be lost).
State = Literal["Up", "Down", "Misconfigured", "Unknown"]

#: Condition types the health of the regions makes (written by the plan's reconciler).
CONDITION_TYPES = ("PrimaryHealthy", "StandbysReady")


@dataclass(frozen=True)
class RegionHealth:
    """One region at one probe."""

    region: str
    serving: bool
    state: State
    #: what was found, without figures that change at each probe
    message: str
    in_recovery: bool | None = None
    lag_bytes: int | None = None
    lag_seconds: float | None = None


@dataclass(frozen=True)
class PlanHealth:
    """Every region of a plan at one probe."""

    regions: tuple[RegionHealth, ...]
    max_lag_bytes: int

    @property
    def primary(self) -> RegionHealth:
        return next(r for r in self.regions if r.serving)

    @property
    def standbys(self) -> tuple[RegionHealth, ...]:
        return tuple(r for r in self.regions if not r.serving)


def serving_region(plan: RecoveryPlanSpec, current_primary: Any) -> Region:
    names = {r.name: r for r in plan.regions}
    return names.get(str(current_primary)) or plan.primary


class _Misconfigured(Exception):  # noqa: N818 - an outcome, reported as a state
    pass


async def _connection(clients: RegionClients, namespace: str, region: Region
                      ) -> Connection:
    """The region's connection (the last one known when its cluster does not answer).
    Raises _Misconfigured (what to fix) or the transport error when nothing is known."""
    try:
        return await failover.region_connection(clients, namespace, region)
    except failover.StepWait as error:  # the connection Secret is missing or incomplete
        raise _Misconfigured(str(error)) from None
    except RegionError as error:
        if error.transient:
            raise
        raise _Misconfigured(str(error)) from None
    except ApiException as error:
        if error.status in (401, 403):
            raise _Misconfigured(f"the cluster of region {region.name} refuses the "
                                 f"kubeconfig's credentials (HTTP {error.status}): fix the "
                                 "kubeconfig Secret or the rights it grants") from None
        raise


_PRIMARY_SQL = "SELECT pg_is_in_recovery(), pg_current_wal_flush_lsn()::text"
_STANDBY_SQL = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text, "
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END")


async def _query(conn: Connection, sql: str, seconds: float) -> tuple[Any, ...]:
    async with asyncio.timeout(seconds), database.session(
            conn, connect_timeout=max(1, int(seconds)),
            application_name="wedsync-operator-probe") as db:
        return await db.row(sql)


@dataclass(frozen=True)
class _Answer:
    region: Region
    serving: bool
    state: State
    message: str
    row: tuple[Any, ...] = ()


async def _probe(clients: RegionClients, namespace: str, region: Region, serving: bool,
                 seconds: float) -> _Answer:
    try:
        conn = await asyncio.wait_for(_connection(clients, namespace, region), seconds)
    except _Misconfigured as error:
        return _Answer(region, serving, "Misconfigured", str(error))
    except (ApiException, *failover.KUBE_ERRORS) as error:
        return _Answer(region, serving, "Unknown",
                       f"its cluster does not answer ({failover.kube_error(error)}) and its "
                       "database address is not known yet")
    try:
        row = await _query(conn, _PRIMARY_SQL if serving else _STANDBY_SQL, seconds)
    except (*failover.DB_ERRORS,) as error:
        return _Answer(region, serving, "Down", failover.db_error(conn, error))
    return _Answer(region, serving, "Up", "answers", row)


async def probe_plan(clients: RegionClients, namespace: str, plan: RecoveryPlanSpec,
                     current_primary: Any, seen_up: Set[str]) -> PlanHealth:
    """Probes every region of the plan once, concurrently, each within the probe timeout.
    `seen_up`: the regions that have answered before; one that never has is Unknown, not
    Down, when it does not answer (see `unseen`)."""
    timeout = float(plan.failover.probe.timeout_seconds)
    serving = serving_region(plan, current_primary)
    answers = await asyncio.gather(*(
        _probe(clients, namespace, r, r.name == serving.name, timeout)
        for r in plan.regions))
    primary = next(a for a in answers if a.serving)
    primary_lsn = primary.row[1] if primary.state == "Up" and primary.row else None
    return PlanHealth(tuple(unseen(_health(a, primary_lsn), seen_up) for a in answers),
                      plan.failover.max_lag_bytes)


def unseen(health: RegionHealth, seen_up: Set[str]) -> RegionHealth:
    """A database that has never answered the operator is Unknown, not Down: only a database
    seen can be lost. Otherwise a path the operator lacks (a NetworkPolicy without egress to
    the database port, a firewall) would look like a lost primary and fail it over."""
    if health.state != "Down" or health.region in seen_up:
        return health
    return replace(health, state="Unknown", message=(
        f"{health.message}; it has not answered the operator yet, so this is not counted as "
        "a lost database: check the network path from the operator to it (the chart's "
        "networkPolicy.databases)"))


def _health(answer: _Answer, primary_lsn: str | None) -> RegionHealth:
    name = answer.region.name
    if answer.state != "Up":
        return RegionHealth(name, answer.serving, answer.state, answer.message)
    in_recovery = bool(answer.row[0])
    if answer.serving:
        message = ("answers, but is in recovery: it does not accept writes" if in_recovery
                   else "answers and accepts writes")
        return RegionHealth(name, True, "Up", message, in_recovery)
    if not in_recovery:
        return RegionHealth(name, False, "Up", "answers, but is not in recovery: it is no "
                            "longer a standby of the primary", False)
    lag = data_loss(primary_lsn, answer.row[1])
    seconds = float(answer.row[2]) if answer.row[2] is not None else None
    return RegionHealth(name, False, "Up", "streams from the primary", True, lag, seconds)


# ---- conditions (pure) ----------------------------------------------------------------------
def conditions(health: PlanHealth | None) -> list[dict[str, str]]:
    """PrimaryHealthy and StandbysReady from the latest probe; Unknown before the first."""
    if health is None:
        return [{**condition(kind, False, "NotProbedYet", "no probe has finished yet"),
                 "status": "Unknown"} for kind in CONDITION_TYPES]
    return [_primary_condition(health.primary), _standbys_condition(health)]


def conditions_after(health: PlanHealth | None, old: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, str]]:
    """The conditions to report: from the latest probe; before this process's first probe,
    the ones already on the plan (a restarted operator does not flap them to Unknown)."""
    if health is None:
        kept = [{k: str(c[k]) for k in ("type", "status", "reason", "message")}
                for c in old if c.get("type") in CONDITION_TYPES]
        if {c["type"] for c in kept} == set(CONDITION_TYPES):
            return sorted(kept, key=lambda c: CONDITION_TYPES.index(c["type"]))
    return conditions(health)


def _primary_condition(primary: RegionHealth) -> dict[str, str]:
    where = f"primary {primary.region}"
    if primary.state in ("Misconfigured", "Unknown"):
        return {**condition("PrimaryHealthy", False, primary.state,
                            f"{where} cannot be probed: {primary.message}"),
                "status": "Unknown"}
    if primary.state == "Down":
        return condition("PrimaryHealthy", False, "ProbeFailed", f"{where}: {primary.message}")
    if primary.in_recovery:
        return condition("PrimaryHealthy", False, "InRecovery", f"{where} {primary.message}")
    return condition("PrimaryHealthy", True, "Answers", f"{where} {primary.message}")


def _standbys_condition(health: PlanHealth) -> dict[str, str]:
    standbys = health.standbys
    if not standbys:
        return condition("StandbysReady", False, "NoStandby",
                         "the plan has no standby region: add one to be able to fail over")
    problems: list[str] = []
    reasons: list[str] = []
    for standby in standbys:
        if standby.state in ("Misconfigured", "Unknown"):
            problems.append(f"standby {standby.region} cannot be probed: {standby.message}")
            reasons.append(standby.state)
        elif standby.state == "Down":
            problems.append(f"standby {standby.region}: {standby.message}")
            reasons.append("ProbeFailed")
        elif not standby.in_recovery:
            problems.append(f"standby {standby.region} {standby.message}")
            reasons.append("NotInRecovery")
        elif standby.lag_bytes is not None and standby.lag_bytes > health.max_lag_bytes:
            problems.append(f"standby {standby.region} lags more than failover.maxLagBytes "
                            f"({health.max_lag_bytes} bytes): an automatic failover to it "
                            "would wait for approval")
            reasons.append("LagOverBound")
    if problems:
        return condition("StandbysReady", False, reasons[0], "; ".join(problems))
    names = ", ".join(s.region for s in standbys)
    return condition("StandbysReady", True, "Streaming",
                     f"{'standby' if len(standbys) == 1 else 'standbys'} {names} "
                     f"{'streams' if len(standbys) == 1 else 'stream'} within "
                     "failover.maxLagBytes")


def same_conditions(a: Sequence[dict[str, str]], b: Sequence[dict[str, str]]) -> bool:
    return [(c["type"], c["status"], c["reason"], c["message"]) for c in a] == \
        [(c["type"], c["status"], c["reason"], c["message"]) for c in b]
