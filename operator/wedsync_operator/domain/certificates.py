"""The admission webhook's TLS: the operator's own CA and the serving certificate it signs.
Pure: the clock is an argument (key generation uses the operating system's randomness).

The CA lives ten years, the serving certificate one; both are renewed when less than a third
of their life is left (`needs_renewal`), so a replica that starts or checks at any time in the
last months renews well before expiry. A renewed CA is a new key: the old CA stays in the
bundle until it expires, so the API server never holds a bundle that cannot verify the
certificate a replica that has not reloaded yet shows it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=3650)
SERVING_LIFETIME = timedelta(days=365)
#: renewed when less than this share of the lifetime is left
RENEW_AT_REMAINING = 1 / 3
#: issued a little in the past: clocks of the API server and the operator differ
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca(common_name: str, now: datetime) -> KeyPair:
    """A self-signed CA that signs serving certificates only."""
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def serving(ca: KeyPair, hosts: list[str], now: datetime) -> KeyPair:
    """A serving certificate for `hosts` (DNS names or IP addresses), signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = _new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + SERVING_LIFETIME)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def not_after(cert_pem: bytes) -> datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def needs_renewal(cert_pem: bytes, now: datetime) -> bool:
    """Less than a third of the certificate's life is left (or it is unreadable)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return True
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < life * RENEW_AT_REMAINING


def covers(cert_pem: bytes, hosts: list[str]) -> bool:
    """Whether the certificate names every host."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    have = {str(n) for n in names.get_values_for_type(x509.DNSName)} | {
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return all(h in have for h in hosts)


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class WebhookTls:
    """What the TLS Secret holds: the CA (its key too), the serving pair, and the bundle the
    API server trusts (the CA, and the previous CA while a renewal is under way)."""

    ca: KeyPair
    serving: KeyPair
    bundle: bytes

    @classmethod
    def from_data(cls, data: dict[str, bytes]) -> WebhookTls | None:
        try:
            return cls(KeyPair(data["ca.crt"], data["ca.key"]),
                       KeyPair(data["tls.crt"], data["tls.key"]),
                       data.get("bundle.crt") or data["ca.crt"])
        except KeyError:
            return None

    def data(self) -> dict[str, bytes]:
        return {"ca.crt": self.ca.cert, "ca.key": self.ca.key, "tls.crt": self.serving.cert,
                "tls.key": self.serving.key, "bundle.crt": self.bundle}


def temporary(hosts: list[str], now: datetime) -> WebhookTls:
    """TLS of one replica alone, for when the shared Secret cannot be had (nobody trusts it)."""
    ca = new_ca("wedsync-operator-webhook-temporary", now)
    return WebhookTls(ca, serving(ca, hosts, now), ca.cert)


def unexpired(bundle: bytes, now: datetime) -> bytes:
    """The bundle without the certificates that have expired."""
    certs = x509.load_pem_x509_certificates(bundle)
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs
                    if c.not_valid_after_utc > now)


def ensure(current: WebhookTls | None, hosts: list[str], common_name: str,
           now: datetime) -> WebhookTls | None:
    """The TLS material to store, or None when `current` is good as it is.

    A new CA when there is none or it is due (the old one stays in the bundle until it
    expires: replicas still serving a certificate it signed keep being trusted); a new serving
    certificate when the CA changed, or it is due, names a host less than `hosts`, or was
    signed by another CA."""
    if current is None:
        ca = new_ca(common_name, now)
        return WebhookTls(ca, serving(ca, hosts, now), ca.cert)
    ca, bundle = current.ca, current.bundle
    if needs_renewal(ca.cert, now):
        ca = new_ca(common_name, now)
        bundle = ca.cert + current.ca.cert
    bundle = unexpired(bundle, now)
    pair = current.serving
    if ca is not current.ca or needs_renewal(pair.cert, now) or not covers(pair.cert, hosts) \
            or not signed_by(pair.cert, ca.cert):
        pair = serving(ca, hosts, now)
    fresh = WebhookTls(ca, pair, bundle)
    return None if fresh == current else fresh
