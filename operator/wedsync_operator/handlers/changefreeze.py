"""ChangeFreeze handlers: the validating webhook every replica serves, and one daemon per
ChangeFreeze (on the replica peering lets act) that keeps its calendar status.

The webhook is kopf's admission server, a root task that peering does not pause: a paused
standby answers admission requests too. kopf does not manage the webhook configuration here
(`settings.admission.managed` stays None): kopf's managed configuration has no
namespaceSelector, a fixed 30 s timeout, and every replica would rewrite it and remove it on
exit. The chart installs the ValidatingWebhookConfiguration (docs/changefreeze.md says why
its failurePolicy, timeout and namespaceSelector are what they are); the operator keeps only
its caBundle (`services.webhooktls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import kopf
from pydantic import ValidationError

from wedsync_operator.api.base import GROUP, VERSION, summary
from wedsync_operator.api.changefreeze import PLURAL, PROTECTABLE, ChangeFreezeSpec
from wedsync_operator.config import WEBHOOK_ID, RuntimeConfig
from wedsync_operator.domain import certificates
from wedsync_operator.domain import changefreeze as rules
from wedsync_operator.domain.conditions import merge_conditions
from wedsync_operator.handlers import common
from wedsync_operator.kube import errors, webhook
from wedsync_operator.kube.clients import local_api_client
from wedsync_operator.services import admission, webhooktls

#: the group/resource pairs the webhook can be asked about
_RESOURCES = {(group, plural) for group, plural in PROTECTABLE.values()}


def _protectable(resource: kopf.Resource) -> bool:
    return (resource.group, resource.plural) in _RESOURCES


@kopf.on.startup(id="changefreeze-webhook")
async def webhook_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """TLS first (the server needs its files), then the server setting kopf starts the
    admission server from (after every start-up handler), then the webhook's own watches.
    A handler of its own with its own client; a TLS Secret that cannot be had does not hold
    up the operator's start (see start_webhook)."""
    if memo.get("webhook_api") is None:
        memo.webhook_api = await local_api_client()
    await start_webhook(settings, memo, memo.webhook_api)


@kopf.on.cleanup(id="changefreeze-webhook-stop")
async def webhook_cleanup(memo: kopf.Memo, **_: Any) -> None:
    await stop_webhook(memo)
    api = memo.get("webhook_api")
    if api is not None:
        await api.close()


async def start_webhook(settings: kopf.OperatorSettings, memo: kopf.Memo, api: Any) -> None:
    # one watch of the ChangeFreezes per replica, first (nothing below may keep it from the
    # freezeRefs of the policies, plans and tuning policies): the webhook's and theirs
    freezes = common.freeze_catalog(memo).start(api)
    runtime: RuntimeConfig = memo.get("runtime") or RuntimeConfig.from_env()
    ns, service = runtime.operator_namespace, runtime.webhook_service
    hosts = [f"{service}.{ns}.svc", f"{service}.{ns}.svc.cluster.local", f"{service}.{ns}",
             service, "localhost", "127.0.0.1",
             *[h.strip() for h in runtime.webhook_hosts.split(",") if h.strip()]]
    folder = Path(tempfile.mkdtemp(prefix="wedsync-webhook-"))  # private: mode 0700
    memo.webhook_folder = folder
    place = webhooktls.TlsPlace(ns, runtime.webhook_secret, hosts, folder,
                                runtime.webhook_config)
    try:
        configured = await webhooktls.keep(api, place, common.now)
    except errors.KubeError as error:
        # never hold the operator's start (failovers, backups) on the webhook: serve with a
        # certificate of this replica alone, which the API server does not trust (with
        # failurePolicy Ignore it admits, and WedsyncChangeFreezeWebhookFailing fires), and
        # keep trying the Secret every few seconds
        logging.getLogger(__name__).error(
            f"webhook TLS: the Secret {ns}/{runtime.webhook_secret} cannot be read or "
            f"written ({error.describe()}); serving a temporary certificate until it can")
        webhooktls.write_files(place, certificates.temporary(hosts, common.now()))
        configured = False
    settings.admission.server = kopf.WebhookServer(
        addr=runtime.webhook_addr, port=runtime.webhook_port,
        certfile=place.certfile, pkeyfile=place.keyfile, cafile=place.cafile,
        file_check_interval=10.0)
    settings.admission.managed = None
    user = await webhook.whoami(api)
    memo.admission = admission.Admission(
        api, rules.Exemptions(operator_namespace=ns, operator_user=user),
        instance=os.environ.get("POD_NAME") or socket.gethostname(), clock=common.now,
        freezes=freezes)
    memo.admission.start()
    memo.webhook_tls_task = asyncio.create_task(
        webhooktls.keep_forever(api, place, common.now, configured))


async def stop_webhook(memo: kopf.Memo) -> None:
    task = memo.get("webhook_tls_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if memo.get("admission") is not None:
        await memo.admission.stop()
    if memo.get("freeze_catalog") is not None:
        await memo.freeze_catalog.stop()
    if memo.get("webhook_folder") is not None:
        shutil.rmtree(memo.webhook_folder, ignore_errors=True)  # the serving key


@kopf.on.validate(_protectable, id=WEBHOOK_ID, operations=["CREATE", "UPDATE", "DELETE"],
                  side_effects=True, ignore_failures=True)
async def review(*, resource: kopf.Resource, subresource: str | None,
                 userinfo: kopf.UserInfo, body: kopf.Body, dryrun: bool, warnings: list[str],
                 memo: Any, **kwargs: Any) -> None:
    # kopf passes operation, old and new as well (not in its WebhookFn protocol)
    request = admission.request_from(resource.kind or "", str(kwargs["operation"]),
                                     subresource, dict(userinfo), body, kwargs.get("old"),
                                     kwargs.get("new"), dryrun)
    decision = await memo.admission.review(request)
    warnings.extend(decision.warnings)
    if not decision.allowed:
        raise kopf.AdmissionError(decision.message, code=403)


@kopf.on.startup(id="changefreeze-registry")
async def freeze_registry(memo: kopf.Memo, **_: Any) -> None:
    """Wake-up events of the calendar daemons, on the root memo (kopf gives each object a
    shallow copy of it)."""
    memo.freeze_wakes = {}


@kopf.daemon(GROUP, VERSION, PLURAL, id="changefreeze-calendar", cancellation_timeout=10.0)
async def calendar_daemon(stopped: kopf.DaemonStopped, name: str, body: kopf.Body,
                          memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Writes the calendar part of the status (active, windows, conditions) and sleeps until
    it next changes, or until the spec changes."""
    wakes: dict[str, tuple[asyncio.Event, list[Any]]] = memo.freeze_wakes
    wake, seen = wakes.setdefault(name, (asyncio.Event(), [None]))
    try:
        while not stopped:
            wake.clear()
            generation = seen[0] = body.metadata.get("generation")
            delay = await _reconcile(name, body, generation, memo, logger)
            await common.sleep_or_wake(wake, stopped, delay)
    finally:
        wakes.pop(name, None)


@kopf.on.event(GROUP, VERSION, PLURAL, id="changefreeze-spec-watch")
async def freeze_event(name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Wakes the calendar daemon when the spec changed (a new generation)."""
    found = memo.freeze_wakes.get(name)
    if found is not None and body.metadata.get("generation") != found[1][0]:
        found[0].set()


async def _reconcile(name: str, body: kopf.Body, generation: Any, memo: kopf.Memo,
                     logger: kopf.Logger) -> float:
    """One status write if the calendar's view changed; returns how long it holds."""
    status = dict(body.status)
    now = common.now()
    try:
        spec = ChangeFreezeSpec.model_validate(dict(body.spec))
    except ValidationError as error:
        # stored before a rule existed (the time zone: CEL cannot check it)
        message = f"invalid spec, nothing is frozen: {summary(error)}"
        new: dict[str, Any] = {
            "active": None, "currentWindow": None, "nextWindow": None,
            "conditions": merge_conditions(
                status.get("conditions") or [],
                [{"type": "Ready", "status": "False", "reason": "InvalidSpec",
                  "message": message}], now, generation)}
        await _write(memo, name, status, new, generation, logger)
        return 3600.0
    cal = rules.calendar(spec, now)
    new = {**cal.wire(), "conditions": merge_conditions(
        status.get("conditions") or [], rules.conditions(name, spec, cal), now, generation)}
    await _write(memo, name, status, new, generation, logger)
    if cal.next_change is None:
        return 3600.0
    return min(3600.0, common.seconds_until(cal.next_change) + 0.05)


async def _write(memo: kopf.Memo, name: str, old: dict[str, Any], new: dict[str, Any],
                 generation: Any, logger: kopf.Logger) -> None:
    new = {**new, "observedGeneration": generation}
    if all(old.get(k) == v for k, v in new.items()):
        return
    try:
        await webhook.patch_status(memo.api, name, None, new)
    except errors.KubeError as error:
        logger.warning(f"status not written ({error.describe()})")
