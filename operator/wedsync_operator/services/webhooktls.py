"""The webhook's TLS, managed by the operator: one CA and serving certificate in a Secret of
the operator's namespace, shared by every replica; the files the webhook server reads; the
caBundle of the chart's ValidatingWebhookConfiguration.

Every replica runs `keep` at start and then every `CHECK_SECONDS`: the first to find the
Secret missing or due (`domain.certificates.ensure`) writes it, conditional on the version it
read; the others read what it wrote. The webhook server (kopf's) re-reads its files when they
change, so a renewed certificate is served without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kubernetes_asyncio import client

from wedsync_operator import metrics
from wedsync_operator.domain import certificates
from wedsync_operator.domain.certificates import WebhookTls
from wedsync_operator.kube import errors, webhook

logger = logging.getLogger(__name__)

#: how often each replica checks the Secret and the webhook configuration
CHECK_SECONDS = 600.0
CA_NAME = "wedsync-operator-webhook-ca"


@dataclass(frozen=True)
class TlsPlace:
    """Where the TLS material lives and who it is for."""

    namespace: str
    secret: str
    hosts: list[str]
    folder: Path
    webhook_config: str

    @property
    def certfile(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def keyfile(self) -> Path:
        return self.folder / "tls.key"

    @property
    def cafile(self) -> Path:
        return self.folder / "bundle.crt"


#: how often while the webhook configuration does not exist yet (the chart creates it at the
#: same time as the operator)
MISSING_CONFIG_SECONDS = 5.0


async def keep(api: client.ApiClient, place: TlsPlace, clock: Callable[[], datetime]
               ) -> bool:
    """One round: the Secret made or renewed if due, the files written when they differ, and
    the caBundle put in the webhook configuration. Returns whether that configuration
    exists."""
    owner = await webhook.config_owner(api, place.webhook_config)
    for _attempt in range(5):
        current, version, owners = await webhook.read_tls(api, place.namespace, place.secret)
        fresh = certificates.ensure(current, place.hosts, CA_NAME, clock())
        if fresh is None:
            assert current is not None
            tls = current
            if owner is not None and owner["uid"] not in {o.get("uid") for o in owners}:
                await webhook.set_owner(api, place.namespace, place.secret, owner)
            break
        try:
            await webhook.write_tls(api, place.namespace, place.secret, fresh, version, owner)
        except errors.ConflictError:
            continue  # another replica wrote it first: use theirs
        logger.info(f"webhook TLS written to Secret {place.namespace}/{place.secret} "
                    f"(serving certificate until "
                    f"{certificates.not_after(fresh.serving.cert):%Y-%m-%d})")
        tls = fresh
        break
    else:
        raise errors.ConflictError(409, "Conflict", f"Secret {place.secret} kept moving")
    write_files(place, tls)
    metrics.WEBHOOK_CERT_EXPIRY.set(certificates.not_after(tls.serving.cert).timestamp())
    written = await webhook.set_ca_bundle(api, place.webhook_config, tls.bundle)
    if written:
        logger.info(f"caBundle set in ValidatingWebhookConfiguration {place.webhook_config}")
    elif written is None:
        logger.info(f"no ValidatingWebhookConfiguration {place.webhook_config} yet: the "
                    "webhook serves, but the API server does not call it")
    return written is not None


def write_files(place: TlsPlace, tls: WebhookTls) -> None:
    place.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path, data in ((place.keyfile, tls.serving.key), (place.certfile, tls.serving.cert),
                       (place.cafile, tls.bundle)):
        if not path.exists() or path.read_bytes() != data:
            tmp = path.with_suffix(".tmp")
            tmp.touch(mode=0o600)
            tmp.write_bytes(data)
            tmp.replace(path)


async def keep_forever(api: client.ApiClient, place: TlsPlace,
                       clock: Callable[[], datetime], configured: bool,
                       every: float = CHECK_SECONDS) -> None:
    """`keep` every `every` seconds, every few seconds while the webhook configuration does
    not exist (`configured` is what the first round found)."""
    while True:
        await asyncio.sleep(every if configured else MISSING_CONFIG_SECONDS)
        try:
            configured = await keep(api, place, clock)
        except errors.KubeError as error:
            logger.warning(f"webhook TLS check failed ({error.describe()}); trying again")
