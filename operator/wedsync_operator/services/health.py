"""The health of a DisasterRecoveryPlan's regions: probed by the failover detector, reported as
the plan's PrimaryHealthy and StandbysReady conditions, its `status.regions` and `lineage`,
and as metrics.

`probe_plan` makes one real SQL round trip (plus a read of a timeline history file) to every
region's database within the plan's probe timeout, concurrently (`servers.observe`): the
region serving writes (`status.currentPrimary`, else the declared Primary) must answer and
accept writes; every other region is judged against the serving primary's lineage
(`domain.lineage.classify`): a standby *Streams* only when its WAL receiver streams on that
lineage; one whose receiver does not run is *NotStreaming*, whatever its replay position says;
a server that is not in recovery, or whose history left the lineage, is *Diverged*. Lag is
measured against the serving primary's flush position now, or, while it does not answer,
against the last position it was seen at (`Known`).

Each region's connection comes from its connection Secret in its own cluster; when that
cluster does not answer, the connection last read is used (`failover.region_connection`), so
the database is still probed: a lost API server is not a lost database. A region whose
configuration is wrong (kubeconfig Secret missing or unusable, connection Secret missing or
without its keys) is *Misconfigured*: it is reported with what to fix and never counts as a
failed probe, so a typo cannot start a failover.

`conditions` and `status_fields` are pure. Their messages carry no figures that change at
every probe (the lag goes to the metrics), so a steady plan's status is not rewritten at each
probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes_asyncio.client.exceptions import ApiException

from wedsync_operator import servers
from wedsync_operator.api.recovery import RecoveryPlanSpec, Region
from wedsync_operator.domain import synchronous
from wedsync_operator.domain.connection import Connection
from wedsync_operator.domain.lineage import (
    Lineage,
    ServerState,
    Switch,
    Verdict,
    classify,
    format_lsn,
    lag,
    parse_lsn,
)
from wedsync_operator.kube.regions import RegionClients, RegionError
from wedsync_operator.services import failover
from wedsync_operator.services.scaling import condition

#: A standby is known to the serving primary by its `application_name`, which must be the
#: region's name (the operator writes it so when it re-points or rebuilds a standby).

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
    #: where it stands against the serving primary's lineage (regions that answer, but the
    #: serving one)
    verdict: Verdict | None = None
    server: ServerState | None = None
    #: closed to every writer but superusers
    fenced: bool = False
    #: a writable primary whose commits wait for synchronous standbys: why (else empty)
    commits_wait: str = ""

    @property
    def writable(self) -> bool:
        """Answers, is not in recovery and is not fenced: it takes writes."""
        return self.state == "Up" and self.in_recovery is False and not self.fenced


@dataclass(frozen=True)
class Known:
    """What the detector remembers between probes (and reads back from the plan's status
    after a restart): the serving primary's lineage and last flush position, and the
    timeline each standby was last seen streaming on."""

    region: str | None = None
    lineage: Lineage | None = None
    lsn: int | None = None
    timelines: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanHealth:
    """Every region of a plan at one probe."""

    regions: tuple[RegionHealth, ...]
    max_lag_bytes: int
    known: Known = field(default_factory=Known)

    @property
    def primary(self) -> RegionHealth:
        return next(r for r in self.regions if r.serving)

    @property
    def standbys(self) -> tuple[RegionHealth, ...]:
        return tuple(r for r in self.regions if not r.serving)

    def promotable(self) -> list[str]:
        """Standbys that may be promoted now, as far as this probe knows."""
        return [r.region for r in self.standbys
                if r.state == "Up" and r.verdict is not None and r.verdict.promotable]


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


async def _observe(conn: Connection, seconds: float) -> servers.Observation:
    async with asyncio.timeout(seconds), servers.connect(
            conn, connect_seconds=seconds, application="wedsync-operator-probe") as db:
        return await servers.observe(db)


@dataclass(frozen=True)
class _Answer:
    region: Region
    serving: bool
    state: State
    message: str
    seen: servers.Observation | None = None


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
        seen = await _observe(conn, seconds)
    except (*failover.DB_ERRORS, ValueError) as error:
        return _Answer(region, serving, "Down", failover.db_error(conn, error))
    return _Answer(region, serving, "Up", "answers", seen)


async def probe_plan(clients: RegionClients, namespace: str, plan: RecoveryPlanSpec,
                     current_primary: Any, seen_up: Set[str], known: Known | None = None
                     ) -> PlanHealth:
    """Probes every region of the plan once, concurrently, each within the probe timeout.
    `seen_up`: the regions that have answered before; one that never has is Unknown, not
    Down, when it does not answer (see `unseen`). `known`: what earlier probes learnt (the
    result carries it forward)."""
    timeout = float(plan.failover.probe.timeout_seconds)
    serving = serving_region(plan, current_primary)
    answers = await asyncio.gather(*(
        _probe(clients, namespace, r, r.name == serving.name, timeout)
        for r in plan.regions))
    return judge(answers_of(answers), plan.failover.max_lag_bytes, known or Known(),
                 seen_up)


@dataclass(frozen=True)
class Answer:
    """What probing one region gave (the input of `judge`, which is pure)."""

    region: str
    serving: bool
    state: State
    message: str
    seen: servers.Observation | None = None


def answers_of(raw: Sequence[_Answer]) -> list[Answer]:
    return [Answer(a.region.name, a.serving, a.state, a.message, a.seen) for a in raw]


def judge(answers: Sequence[Answer], max_lag_bytes: int, known: Known, seen_up: Set[str]
          ) -> PlanHealth:
    """The regions' health from one round of answers, and what to remember. Pure."""
    primary = next(a for a in answers if a.serving)
    lineage, reference = known.lineage, known.lsn
    if known.region != primary.region:  # a failover moved the primary: start afresh
        lineage, reference = None, None
    if primary.state == "Up" and primary.seen is not None and \
            not primary.seen.server.in_recovery:
        lineage = primary.seen.server.known
        reference = primary.seen.server.lsn
    timelines = dict(known.timelines)
    replicas = (primary.seen.replicas if primary.state == "Up" and primary.seen is not None
                and not primary.seen.server.in_recovery else None)
    regions = []
    for answer in answers:
        health = _health(answer, lineage, reference, timelines.get(answer.region), replicas,
                         primary.region)
        if health.verdict is not None and health.verdict.state == "Streaming" and \
                health.verdict.timeline is not None:
            timelines[answer.region] = health.verdict.timeline
        elif answer.seen is not None and not answer.seen.server.in_recovery:
            timelines.pop(answer.region, None)  # it left recovery: what it streamed is past
        regions.append(unseen(health, seen_up))
    return PlanHealth(tuple(regions), max_lag_bytes,
                      Known(primary.region, lineage, reference, timelines))


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


def _health(answer: Answer, lineage: Lineage | None, reference: int | None,
            remembered: int | None, replicas: Mapping[str, str] | None = None,
            serving: str = "") -> RegionHealth:
    name = answer.region
    if answer.state != "Up" or answer.seen is None:
        return RegionHealth(name, answer.serving, answer.state, answer.message)
    server = answer.seen.server
    fenced = answer.seen.fenced
    if answer.serving:
        waits = (None if server.in_recovery or fenced else
                 synchronous.commits_wait(answer.seen.synchronous_names,
                                          answer.seen.synchronous_streaming))
        message = ("answers, but is in recovery: it does not accept writes" if
                   server.in_recovery else
                   "answers, but is fenced: it accepts no writes" if fenced else
                   f"answers, but {waits}" if waits else
                   "answers and accepts writes")
        return RegionHealth(name, True, "Up", message, server.in_recovery, server=server,
                            fenced=fenced, commits_wait=waits or "")
    verdict = classify(server, lineage, remembered=remembered)
    if verdict.state == "Streaming" and replicas is not None and \
            replicas.get(name) != "streaming":
        verdict = replace(verdict, state="NotStreaming", reason=(
            f"its WAL receiver streams, but not from {serving}: the serving primary has no "
            f"standby named {name} streaming (pg_stat_replication.application_name)"))
    if not server.in_recovery:
        return RegionHealth(name, False, "Up", f"is Diverged: {verdict.reason}", False,
                            verdict=verdict, server=server, fenced=fenced)
    # a standby is behind the primary's position (now, or the last seen) and at least by the
    # WAL it received and has not replayed yet, whichever is more
    position = server.lsn
    known_lags = [b for b in (lag(reference, position), lag(server.received_lsn, position))
                  if b is not None]
    behind = max(known_lags) if known_lags else None
    return RegionHealth(name, False, "Up", verdict.reason, True, behind,
                        answer.seen.replay_age_seconds if verdict.state == "Streaming" else
                        None, verdict, server, fenced)


# ---- conditions and status (pure) -----------------------------------------------------------
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
    if primary.fenced:
        return condition("PrimaryHealthy", False, "Fenced", f"{where} {primary.message}")
    if primary.commits_wait:
        return condition("PrimaryHealthy", False, "WaitingForSynchronousStandby",
                         f"{where} {primary.message}")
    return condition("PrimaryHealthy", True, "Answers", f"{where} {primary.message}")


def _standbys_condition(health: PlanHealth) -> dict[str, str]:
    standbys = health.standbys
    if not standbys:
        return condition("StandbysReady", False, "NoStandby",
                         "the plan has no standby region: add one to be able to fail over")
    problems: list[str] = []
    reasons: list[str] = []
    for standby in standbys:
        verdict = standby.verdict
        if standby.state in ("Misconfigured", "Unknown"):
            problems.append(f"standby {standby.region} cannot be probed: {standby.message}")
            reasons.append(standby.state)
        elif standby.state == "Down":
            problems.append(f"standby {standby.region}: {standby.message}")
            reasons.append("ProbeFailed")
        elif verdict is not None and verdict.state == "Diverged":
            problems.append(f"{standby.region} is Diverged and must be rebuilt as a standby "
                            f"of the primary: {verdict.reason}")
            reasons.append("Diverged")
        elif verdict is not None and verdict.state == "NotStreaming":
            problems.append(f"standby {standby.region} does not stream: {verdict.reason}")
            reasons.append("NotStreaming")
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
                     f"{'streams' if len(standbys) == 1 else 'stream'} from the primary "
                     "within failover.maxLagBytes")


def same_conditions(a: Sequence[dict[str, str]], b: Sequence[dict[str, str]]) -> bool:
    return [(c["type"], c["status"], c["reason"], c["message"]) for c in a] == \
        [(c["type"], c["status"], c["reason"], c["message"]) for c in b]


#: status fields the health of the regions writes (through the plan's reconciler)
STATUS_FIELDS = ("lineage", "regions")


def status_fields(health: PlanHealth | None, old: Mapping[str, Any]) -> dict[str, Any]:
    """`status.lineage` and `status.regions` from the latest probe (as they are before the
    first one). The lineage's last seen position is written only once the serving primary
    stops answering, so a steady plan's status is not rewritten at every probe."""
    if health is None:
        return {k: old[k] for k in STATUS_FIELDS if k in old}
    out: dict[str, Any] = {"regions": [_region_status(r) for r in health.regions]}
    known = health.known
    if known.lineage is not None and known.region is not None:
        lineage: dict[str, Any] = {
            "region": known.region, "timeline": known.lineage.timeline,
            "history": [{"timeline": s.timeline, "lsn": format_lsn(s.lsn)}
                        for s in known.lineage.history]}
        if health.primary.state != "Up" and known.lsn is not None:
            lineage["lastSeenLsn"] = format_lsn(known.lsn)
        out["lineage"] = lineage
    elif "lineage" in old:
        out["lineage"] = old["lineage"]
    return out


def standbys_ready(health: PlanHealth) -> bool:
    """Whether every declared standby streams from the serving primary (StandbysReady)."""
    return _standbys_condition(health)["status"] == "True"


def protection_fields(health: PlanHealth | None, old: Mapping[str, Any], now: datetime
                      ) -> dict[str, Any]:
    """`status.protection`: since when a declared standby has not streamed from the serving
    primary (StandbysReady False), and once every one does again, how long that lasted (the
    time to re-protect). Unchanged before the first probe."""
    out = dict(old.get("protection") or {})
    if health is None:
        return out
    ready = standbys_ready(health)
    if not ready and "unprotectedSince" not in out:
        out["unprotectedSince"] = _iso(now)
    elif ready and "unprotectedSince" in out:
        since = datetime.fromisoformat(str(out.pop("unprotectedSince")).replace("Z", "+00:00"))
        out["reprotectedAt"] = _iso(now)
        out["lastUnprotectedSeconds"] = round((now - since).total_seconds(), 1)
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _region_status(region: RegionHealth) -> dict[str, Any]:
    role = "Primary" if region.serving else "Standby"
    out: dict[str, Any] = {"name": region.region, "role": role}
    if region.state != "Up":
        out.update(state=region.state, message=region.message)
        return out
    if region.serving:
        state = "Serving" if region.writable else "NotServing"
        timeline = region.server.timeline if region.server else None
    else:
        assert region.verdict is not None
        state, timeline = region.verdict.state, region.verdict.timeline
    out.update(state=state, message=region.message, fenced=region.fenced)
    if timeline is not None:
        out["timeline"] = timeline
    return out


def known_from_status(status: Mapping[str, Any]) -> Known:
    """What the plan's status remembers of the lineage (after an operator restart)."""
    raw = status.get("lineage") or {}
    timelines = {str(r["name"]): int(r["timeline"]) for r in status.get("regions") or ()
                 if r.get("state") == "Streaming" and r.get("timeline")}
    if not raw.get("timeline"):
        return Known(timelines=timelines)
    try:
        lineage = Lineage(int(raw["timeline"]), tuple(
            Switch(int(s["timeline"]), parse_lsn(str(s["lsn"])))
            for s in raw.get("history") or ()))
        lsn = parse_lsn(str(raw["lastSeenLsn"])) if raw.get("lastSeenLsn") else None
    except (KeyError, TypeError, ValueError):
        return Known(timelines=timelines)
    return Known(str(raw.get("region") or "") or None, lineage, lsn, timelines)


def why_not_promotable(health: PlanHealth) -> str:
    """Why the standbys that cannot be promoted cannot (for events and run messages)."""
    reasons = []
    for standby in health.standbys:
        if standby.region in health.promotable():
            continue
        if standby.verdict is not None:
            reasons.append(f"{standby.region} is {standby.verdict.state}: "
                           f"{standby.verdict.reason}")
        else:
            reasons.append(f"{standby.region} is {standby.state}: {standby.message}")
    return "; ".join(reasons)
