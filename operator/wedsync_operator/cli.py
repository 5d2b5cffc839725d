"""The `wedsync-operator` command: run the operator, print the CRDs, preview a policy, ask
whether a change freeze holds (for pipelines)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from wedsync_operator import __version__

#: Every log line: UTC time to the millisecond, level, logger, then kopf's [namespace/name]
#: of the object the line is about.
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(message)s"


def configure_logging(verbose: bool = False, debug: bool = False) -> None:
    """kopf's log handler with timestamps (ISO 8601, UTC) and the object of each line."""
    import logging
    import time

    import kopf

    kopf.configure(verbose=verbose, debug=debug, log_format=LOG_FORMAT,  # type: ignore[arg-type]
                   log_prefix=True)
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if formatter is not None:
            formatter.converter = time.gmtime
            formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
            formatter.default_msec_format = "%s.%03dZ"
    # the API client logs whole request and response bodies at DEBUG: Secrets included
    logging.getLogger("kubernetes_asyncio").setLevel(logging.INFO)
    # the ChangeFreeze webhook logs its own lines (a denial is not an error of the operator):
    # not kopf's line per call, nor aiohttp's access line per request
    logging.getLogger("kopf.objects").addFilter(_QuietWebhook())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _QuietWebhook:
    """Drops kopf's lines about the ChangeFreeze webhook's calls ("Webhook 'changefreeze' is
    invoked / succeeded / failed permanently")."""

    def filter(self, record: object) -> bool:
        message = getattr(record, "msg", "")
        return not (isinstance(message, str) and message.startswith("Webhook 'changefreeze'"))


def _run(args: argparse.Namespace) -> int:
    import kopf

    import wedsync_operator.handlers  # noqa: F401 - registers the handlers
    from wedsync_operator.config import DEFAULT_PEERING, RuntimeConfig

    runtime = RuntimeConfig.from_env(
        metrics_port=args.metrics_port, liveness_port=args.liveness_port,
        webhook_port=args.webhook_port,
        # the heartbeat Lease must live where the operator watches
        heartbeat_namespace=None if args.all_namespaces else args.namespace[0],
        namespaces=() if args.all_namespaces else tuple(args.namespace),
    )
    configure_logging(verbose=args.verbose, debug=args.debug)
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

    import yaml
    from pydantic import ValidationError

    from wedsync_operator.api.base import problems
    from wedsync_operator.plan import load_policy_file, plot_plan, render_plan

    try:
        spec = load_policy_file(args.policy)
    except OSError as error:
        return _fail(f"{args.policy}: cannot read it: {error.strerror or error}")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        return _fail(f"{args.policy}: not valid YAML{where}: {problem}")
    except ValidationError as error:
        return _fail(*(f"{field}: {message}" for field, message in problems(error)))
    except ValueError as error:
        return _fail(str(error))
    try:
        start = datetime.fromisoformat(args.start) if args.start else datetime.now(UTC)
    except ValueError:
        return _fail(f"--start {args.start!r} is not an ISO 8601 instant, e.g. "
                     "2026-06-13T08:00:00+01:00")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    _emit(render_plan(spec, start, args.days))
    if args.png:
        plot_plan(spec, start, args.days, args.png)
        _emit(f"timeline written to {args.png}\n")
    return 0


def _freeze_status(args: argparse.Namespace) -> int:
    """`wedsync-operator freeze status`: exit 0 when changes are allowed, 1 during a freeze."""
    import asyncio
    from datetime import UTC, datetime

    from kubernetes_asyncio.config import ConfigException

    from wedsync_operator.domain.changefreeze import verdict
    from wedsync_operator.kube import errors
    from wedsync_operator.services.admission import read_freezes

    try:
        at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    except ValueError:
        return _fail(f"--at {args.at!r} is not an ISO 8601 instant, e.g. "
                     "2026-06-13T08:00:00+01:00")
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        freezes, labels, invalid = asyncio.run(read_freezes(args.namespace))
    except errors.KubeError as error:
        return _fail(f"cannot read the ChangeFreezes: {error.describe()}")
    except (ConfigException, OSError) as error:  # no kubeconfig, an unreadable one
        return _fail(f"cannot reach the cluster: {error}")
    found = verdict(freezes, args.namespace, labels, args.kind, at)
    for name in invalid:
        sys.stderr.write(f"ChangeFreeze {name!r} has an invalid spec and protects nothing "
                         "(kubectl describe it)\n")
    _emit("".join(f"{line}\n" for line in found.lines))
    return FROZEN if found.frozen else 0


#: Exit status of `freeze status` during a freeze.
FROZEN = 1


def _emit(text: str) -> None:
    """Writes all of `text` to stdout. Large outputs go out in a loop of writes: an
    unbuffered stdout (PYTHONUNBUFFERED, common in images) writes once and drops the rest of
    a partial write, so a reader that went away would go unnoticed."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a stream without a file
        sys.stdout.write(text)
        return
    sys.stdout.flush()
    data = memoryview(text.encode())
    while data:
        data = data[os.write(fd, data):]


#: Exit status for bad input (a file that cannot be read, an invalid policy), as argparse uses.
BAD_INPUT = 2
#: Exit status after the reader of the output went away (`| head`): a process killed by
#: SIGPIPE reports 128 + 13, and so does this one, silently.
CLOSED_PIPE = 141


def _fail(*lines: str) -> int:
    for line in lines:
        sys.stderr.write(f"{line}\n")
    return BAD_INPUT


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


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
    run.add_argument("--webhook-port", type=int,
                     help="the ChangeFreeze admission webhook's HTTPS port (9443)")
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
    plan.add_argument("--days", type=_positive, default=14, help="how far ahead (14)")
    plan.add_argument("--start", help="ISO start instant (now)")
    plan.add_argument("--png", help="also draw the replica timeline to this PNG file")
    plan.set_defaults(func=_plan)

    freeze = sub.add_parser("freeze", help="ChangeFreezes for pipelines")
    freeze_sub = freeze.add_subparsers(dest="freeze_command", required=True)
    status = freeze_sub.add_parser(
        "status", help="exit 0 when changes are allowed, 1 during a freeze (a CI step before "
        "kubectl apply or helm upgrade); uses the current kubeconfig")
    status.add_argument("-n", "--namespace",
                        help="the namespace to deploy to (its labels pick the freezes); "
                        "without it, any enforced freeze counts")
    status.add_argument("--kind", default="Deployment",
                        help="the kind to be changed (Deployment)")
    status.add_argument("--at", help="ISO instant to ask about (now)")
    status.set_defaults(func=_freeze_status)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader closed the pipe: stop quietly. Point stdout at /dev/null so that the
        # interpreter's own flush at exit does not complain about it either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_PIPE
    return code


if __name__ == "__main__":
    raise SystemExit(main())
