"""Writes charts/wedsync-operator/files/rbac-rules.yaml from wedsync_operator.rbac.

`wedsync-operator crds --write` (make crds) does the same; this script is for a quick run:

    .venv/bin/python tools/gen_rbac.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from wedsync_operator.rbac import write_rbac

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    for path in write_rbac(ROOT):
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")


if __name__ == "__main__":
    main()
