"""What a DisasterRecoveryPlan's backup jobs refer to and must find in the cluster: Secrets
(with the keys each must hold) and PersistentVolumeClaims; what is missing, as instructions.
Pure: the service reads the cluster and passes what it found."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from wedsync_operator.api.recovery import RecoveryPlanSpec
from wedsync_operator.domain import backups as builders

CONNECTION_KEYS = ("host", "port", "user", "password", "dbname")
TLS_KEYS = ("ca.crt", "tls.crt", "tls.key")


@dataclass(frozen=True)
class SecretNeed:
    namespace: str
    name: str
    keys: tuple[str, ...]
    why: str


def secrets_needed(spec: RecoveryPlanSpec, namespace: str, plan_name: str) -> list[SecretNeed]:
    """The Secrets the backup jobs (and the operator) need and which keys each must hold."""
    primary = spec.primary
    needs = []
    kubeconfig = primary.cluster.kubeconfig_secret
    if kubeconfig is None:
        needs.append(SecretNeed(primary.namespace or namespace, primary.connection_secret.name,
                                CONNECTION_KEYS, f"connectionSecret of primary region "
                                f"{primary.name}"))
    else:
        needs.append(SecretNeed(namespace, kubeconfig.name, (kubeconfig.key,),
                                f"kubeconfig of primary region {primary.name}'s cluster"))
    for repo in spec.backups.repositories:
        if repo.s3 is not None:
            creds = repo.s3.credentials_secret
            needs.append(SecretNeed(namespace, creds.name,
                                    (creds.access_key_id_key, creds.secret_access_key_key),
                                    f"S3 credentials of repository {repo.name}"))
            ca = repo.s3.ca_secret
            if ca is not None:
                needs.append(SecretNeed(namespace, ca.name, (ca.key,),
                                        f"CA bundle of S3 repository {repo.name}"))
    if builders.pg_access_for(spec, namespace).host is not None:
        needs.append(SecretNeed(namespace, builders.tls_secret_name(plan_name), TLS_KEYS,
                                "client certificate of the backup jobs for the database "
                                "pod's pgBackRest TLS server"))
    return needs


def claims_needed(spec: RecoveryPlanSpec) -> list[tuple[str, str]]:
    """(claim name, why) of every PersistentVolumeClaim the jobs mount."""
    return [(repo.posix.claim_name, f"volume of repository {repo.name}")
            for repo in spec.backups.repositories if repo.posix is not None]


def reference_problems(needs: Sequence[SecretNeed],
                       found: Mapping[tuple[str, str], frozenset[str] | None],
                       claims: Sequence[tuple[str, str]], namespace: str,
                       claims_found: Mapping[str, bool]) -> list[str]:
    """What is missing, each as an instruction. `found` maps (namespace, name) to the keys of
    the Secret, or None when it does not exist."""
    problems = []
    for need in needs:
        keys = found.get((need.namespace, need.name))
        if keys is None:
            problems.append(f"Secret {need.namespace}/{need.name} ({need.why}) does not "
                            f"exist: create it with keys {', '.join(need.keys)}")
            continue
        lacking = [k for k in need.keys if k not in keys]
        if lacking:
            problems.append(f"Secret {need.namespace}/{need.name} ({need.why}) lacks "
                            f"{'key' if len(lacking) == 1 else 'keys'} {', '.join(lacking)}: "
                            "add them")
    for claim, why in claims:
        if not claims_found.get(claim):
            problems.append(f"PersistentVolumeClaim {namespace}/{claim} ({why}) does not "
                            "exist: create it")
    return problems
