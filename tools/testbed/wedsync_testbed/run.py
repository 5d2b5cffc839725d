"""`make run`: a local control plane, the CRDs and samples, and the operator in the foreground.

Ctrl-C stops the operator, then the control plane. The kubeconfig stays at a fixed path while
it runs, so `kubectl get dbopt,drplan -A` works from another terminal.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from wedsync_testbed.controlplane import REPO_ROOT, LocalCluster, binaries


def main() -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--workdir", default=str(REPO_ROOT / ".run"),
                      help="folder for the cluster's data, kubeconfig and logs (.run)")
    args.add_argument("--no-samples", action="store_true", help="do not apply the samples")
    opts = args.parse_args()

    workdir = Path(opts.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    print("building the control plane if needed (the first build takes many minutes)...",
          flush=True)
    bins = binaries()
    cluster = LocalCluster(name="wedsync-local", workdir=workdir, bins=bins)
    cluster.start()
    try:
        cluster.apply_crds(REPO_ROOT / "crds")
        samples = REPO_ROOT / "manifests" / "samples"
        if not opts.no_samples and samples.is_dir():
            print(cluster.kubectl("apply", "--server-side", "-f", str(samples)), end="")
        print(
            f"\nlocal control plane {cluster.server} is up.\n"
            f"  export KUBECONFIG={cluster.kubeconfig}\n"
            f"  {bins.kubectl} get dbopt,drplan,failover,hpa -A\n"
            f"logs: {cluster.logs}\nstarting the operator; Ctrl-C stops everything.\n",
            flush=True,
        )
        operator = subprocess.Popen(
            [sys.executable, "-m", "wedsync_operator", "run", "-A", "--standalone"],
            env=cluster.env(),
        )
        try:
            return operator.wait()
        except KeyboardInterrupt:
            operator.send_signal(signal.SIGINT)
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
            return 0
    finally:
        print("stopping the local control plane...", flush=True)
        cluster.stop()


if __name__ == "__main__":
    raise SystemExit(main())
