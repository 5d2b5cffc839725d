"""Restore handlers: one daemon per unfinished Restore drives it from its status; deleting a
Restore cleans up what it made in its region's cluster.

The daemon reads the status once when it starts (at creation, or when a restarted operator
resumes the object), then ticks `services.restore` and writes the status after every tick,
conditional on the Restore being as the daemon last saw it (a second driver cannot interleave
its steps). The spec (approval) is read live from the body.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from wedsync_operator.api.base import GROUP, VERSION
from wedsync_operator.api.restore import PLURAL, TERMINAL_PHASES, RestoreSpec, RestoreStatus
from wedsync_operator.domain import restore as machine
from wedsync_operator.domain.conditions import merge_conditions
from wedsync_operator.handlers import common
from wedsync_operator.kube.regions import RegionClients, RegionError, get_or_none
from wedsync_operator.kube.status import patch_status_guarded
from wedsync_operator.services import restore
from wedsync_operator.services.events import Event

#: after an unexpected API error the daemon retries this much later
ERROR_BACKOFF_SECONDS = 5.0
#: tries of the clean-up before a Restore whose region cannot be reached is let go
CLEANUP_TRIES = 30


# No `when` filter on the phase: kopf cancels a daemon the moment its filter stops matching,
# that is when the watch event of its own final status write arrives, which raced the posting
# of that tick's Events (the final Succeeded or the failure's reason was lost about every
# other run on a real node). The daemon ends by itself at a final phase instead; one started
# for a finished Restore (an operator restart) returns at once.
@kopf.daemon(GROUP, VERSION, PLURAL, id="restore-run", cancellation_timeout=30.0)
async def run_daemon(stopped: kopf.DaemonStopped, namespace: str | None, name: str,
                     body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger,
                     **_: Any) -> None:
    assert namespace is not None  # a namespaced resource
    regions: RegionClients = memo.regions
    try:
        status = RestoreStatus.model_validate(dict(body.status))
    except ValidationError as error:
        raise kopf.PermanentError(f"unreadable status: {error}") from error
    if status.phase in TERMINAL_PHASES:
        return
    written = dict(body.status)
    version = str(body.metadata.get("resourceVersion") or "")
    uid = str(body.metadata.get("uid") or "")
    while not stopped and status.phase not in TERMINAL_PHASES:
        generation = body.metadata.get("generation")
        spec: RestoreSpec | None = None
        try:
            spec = RestoreSpec.model_validate(dict(body.spec))
        except ValidationError as error:
            # stored before a rule existed: say what is wrong, do nothing
            message = f"invalid spec: {error.errors()[0].get('msg')}"
            result = restore.Tick(machine.fail(status, common.now(), message),
                                  [Event("Warning", "InvalidSpec", message)],
                                  reason="InvalidSpec")
        else:
            run = restore.Run(namespace, name, uid, spec, status, regions, common.now,
                              resolve=common.freeze_catalog(memo).resolve)
            result = await restore.tick(run)
        new = _with_conditions(spec, result, written, generation)
        try:
            version = await patch_status_guarded(regions.local, GROUP, VERSION, PLURAL,
                                                 namespace, name, version, written, new)
        except (ApiException, TimeoutError, OSError) as error:
            if not isinstance(error, ApiException) or error.status != 409:
                logger.warning(f"restore status write failed, retrying in "
                               f"{ERROR_BACKOFF_SECONDS:.0f}s: {error}")
                await stopped.wait(ERROR_BACKOFF_SECONDS)
                continue
            logger.info("status write refused: the Restore was written meanwhile; reading it "
                        "again")
            fresh = await get_or_none(regions.local, f"/apis/{GROUP}/{VERSION}/namespaces/"
                                      f"{namespace}/{PLURAL}/{name}")
            if fresh is None:
                return
            version = str(fresh["metadata"]["resourceVersion"])
            written = dict(fresh.get("status") or {})
            status = RestoreStatus.model_validate(written)
            continue
        written, status = new, result.status
        common.post(body, result.events)
        for event in result.events:
            logger.info(f"{event.reason}: {event.message}")
        if result.delay:
            await stopped.wait(result.delay)
        else:
            await asyncio.sleep(0)


def _with_conditions(spec: RestoreSpec | None, result: restore.Tick, written: dict[str, Any],
                     generation: int | None) -> dict[str, Any]:
    status = result.status
    new = status.model_copy(update={"observed_generation": generation}).wire()
    if spec is not None:
        conditions = machine.conditions(spec, status, result.reason)
    else:
        conditions = [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
                       "message": status.message}]
    old = written.get("conditions") or []
    new["conditions"] = merge_conditions(old, conditions, common.now(), generation)
    return new


@kopf.on.delete(GROUP, VERSION, PLURAL, id="restore-cleanup")
async def cleanup(namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo,
                  logger: kopf.Logger, retry: int, **_: Any) -> None:
    """Deletes the restore's Jobs and (unless `clone.keep`) its clone in the region's
    cluster; owner references cannot reach there."""
    assert namespace is not None
    try:
        spec = RestoreSpec.model_validate(dict(body.spec))
        status = RestoreStatus.model_validate(dict(body.status))
    except ValidationError:
        return  # it never ran
    try:
        events = await restore.cleanup(memo.regions, namespace, name, spec, status)
    except restore.KUBE_ERRORS as error:
        transient = not isinstance(error, RegionError) or error.transient
        if transient and retry < CLEANUP_TRIES:
            raise kopf.TemporaryError(f"cleaning up in region {status.region} failed: "
                                      f"{restore.kube_error(error)}", delay=10) from error
        events = [Event("Warning", "CleanupFailed", f"objects of this Restore are left in "
                        f"region {status.region}: {restore.kube_error(error)}")]
    common.post(body, events)
    for event in events:
        logger.info(f"{event.reason}: {event.message}")
