"""The webhook's own CA and serving certificate: issued, kept, renewed before expiry."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from wedsync_operator.domain import certificates as certs

NOW = datetime(2026, 6, 13, 9, 0, tzinfo=UTC)
HOSTS = ["wedsync-operator-webhook.wedsync-system.svc", "127.0.0.1"]


def test_a_fresh_secret_gets_a_ca_and_a_serving_certificate_for_every_host(
        tmp_path: Path) -> None:
    tls = certs.ensure(None, HOSTS, "wedsync-webhook-ca", NOW)
    assert tls is not None
    assert certs.covers(tls.serving.cert, HOSTS)
    assert certs.signed_by(tls.serving.cert, tls.ca.cert)
    assert tls.bundle == tls.ca.cert
    # what the API server does: verify the serving certificate against the bundle
    (tmp_path / "bundle.crt").write_bytes(tls.bundle)
    context = ssl.create_default_context(cafile=str(tmp_path / "bundle.crt"))
    assert context.cert_store_stats()["x509_ca"] == 1
    cert = x509.load_pem_x509_certificate(tls.serving.cert)
    assert cert.not_valid_after_utc - NOW > timedelta(days=360)


def test_good_material_is_kept() -> None:
    tls = certs.ensure(None, HOSTS, "ca", NOW)
    assert tls is not None
    assert certs.ensure(tls, HOSTS, "ca", NOW + timedelta(days=200)) is None


def test_the_serving_certificate_is_renewed_with_a_third_of_its_life_left() -> None:
    tls = certs.ensure(None, HOSTS, "ca", NOW)
    assert tls is not None
    later = NOW + timedelta(days=250)  # 115 of 365 days left
    renewed = certs.ensure(tls, HOSTS, "ca", later)
    assert renewed is not None
    assert renewed.ca == tls.ca
    assert renewed.serving != tls.serving
    assert certs.not_after(renewed.serving.cert) > later + timedelta(days=360)


def test_a_new_host_gets_a_new_serving_certificate_from_the_same_ca() -> None:
    tls = certs.ensure(None, HOSTS, "ca", NOW)
    assert tls is not None
    more = certs.ensure(tls, [*HOSTS, "10.0.0.7"], "ca", NOW)
    assert more is not None
    assert more.ca == tls.ca
    assert certs.covers(more.serving.cert, ["10.0.0.7"])


def test_a_ca_due_for_renewal_is_replaced_and_the_old_one_stays_trusted() -> None:
    tls = certs.ensure(None, HOSTS, "ca", NOW)
    assert tls is not None
    late = NOW + timedelta(days=2500)  # under a third of ten years left
    renewed = certs.ensure(tls, HOSTS, "ca", late)
    assert renewed is not None
    assert renewed.ca != tls.ca
    assert certs.signed_by(renewed.serving.cert, renewed.ca.cert)
    bundle = x509.load_pem_x509_certificates(renewed.bundle)
    assert len(bundle) == 2  # new and old CA: a replica not reloaded yet is still trusted
    after_old_expiry = NOW + timedelta(days=3651)
    trimmed = certs.ensure(renewed, HOSTS, "ca", after_old_expiry)
    assert trimmed is not None
    assert len(x509.load_pem_x509_certificates(trimmed.bundle)) == 1


def test_a_serving_certificate_of_another_ca_is_replaced() -> None:
    one = certs.ensure(None, HOSTS, "ca", NOW)
    other = certs.ensure(None, HOSTS, "ca", NOW)
    assert one is not None
    assert other is not None
    mixed = certs.WebhookTls(one.ca, other.serving, one.bundle)
    fixed = certs.ensure(mixed, HOSTS, "ca", NOW)
    assert fixed is not None
    assert certs.signed_by(fixed.serving.cert, one.ca.cert)


def test_secret_data_round_trips_and_partial_data_is_none() -> None:
    tls = certs.ensure(None, HOSTS, "ca", NOW)
    assert tls is not None
    assert certs.WebhookTls.from_data(tls.data()) == tls
    assert certs.WebhookTls.from_data({"ca.crt": tls.ca.cert}) is None
