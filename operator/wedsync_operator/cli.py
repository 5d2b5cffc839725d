"""The `wedsync-operator` command: run the operator, print the CRDs, preview a policy."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wedsync_operator import __version__


def _run(args: argparse.Namespace) -> int:
    import logging

    import kopf

    import wedsync_operator.handlers  # noqa: F401 - registers the handlers
    from wedsync_operator.config import DEFAULT_PEERING, RuntimeConfig

    runtime = RuntimeConfig.from_env(
        metrics_port=args.metrics_port, liveness_port=args.liveness_port,
        # the heartbeat Lease must live where the operator watches
        heartbeat_namespace=None if args.all_namespaces else args.namespace[0],
        namespaces=() if args.all_namespaces else tuple(args.namespace),
    )
    kopf.configure(verbose=args.verbose, debug=args.debug, log_format=kopf.LogFormat.PLAIN)
    # the API client logs whole request and response bodies at DEBUG: Secrets included
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    memo = kopf.Memo(runtime=runtime)
    kopf.run(
        standalone=args.standalone,
        priority=args.priority,
        # a peering name makes peering mandatory in kopf: only when not standalone
        peering_name=None if args.standalone else (args.peering or DEFAULT_PEERING),
        liveness_endpoint=f"http://0.0.0.0:{runtime.liveness_port}/healthz",
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        memo=memo,
    )
    return 0


def _crds(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wedsync_operator.api.resources import render_crds, write_crds
    from wedsync_operator.rbac import write_rbac

    if args.write:
        for path in [*write_crds(Path(args.root)), *write_rbac(Path(args.root))]:
            sys.stdout.write(f"wrote {path}\n")
    else:
        sys.stdout.write(render_crds())
    return 0


def _plan(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from wedsync_operator.plan import load_policy_file, plot_plan, render_plan

    spec = load_policy_file(args.policy)
    start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    sys.stdout.write(render_plan(spec, start, args.days))
    if args.png:
        plot_plan(spec, start, args.days, args.png)
        sys.stdout.write(f"timeline written to {args.png}\n")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="wedsync-operator", description=__doc__)
    top.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    scope = run.add_mutually_exclusive_group(required=True)
    scope.add_argument("-A", "--all-namespaces", action="store_true",
                       help="watch every namespace")
    scope.add_argument("-n", "--namespace", action="append",
                       help="watch this namespace (repeatable; globs allowed)")
    run.add_argument("--standalone", action="store_true",
                     help="no peering with other replicas (local runs and tests)")
    run.add_argument("--priority", type=int, default=0,
                     help="peering priority; give each replica a distinct one")
    run.add_argument("--peering", help="name of the kopf peering object")
    run.add_argument("--metrics-port", type=int, help="Prometheus metrics port (8080)")
    run.add_argument("--liveness-port", type=int, help="liveness endpoint port (8081)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument("--debug", action="store_true")
    run.set_defaults(func=_run)

    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.add_argument("--write", action="store_true",
                      help="write crds/, the chart's crds/ and its RBAC rules instead of printing")
    crds.add_argument("--root", default=".", help="repository root for --write (.)")
    crds.set_defaults(func=_crds)

    plan = sub.add_parser("plan", help="preview a DatabaseOptimizationPolicy's transitions")
    plan.add_argument("policy", help="a YAML file holding a DatabaseOptimizationPolicy")
    plan.add_argument("--days", type=int, default=14, help="how far ahead (14)")
    plan.add_argument("--start", help="ISO start instant (now)")
    plan.add_argument("--png", help="also draw the replica timeline to this PNG file")
    plan.set_defaults(func=_plan)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
