"""Make sure Graphviz's `dot` is installed for the graph tests (CI installs Debian's package).

Run by `make test` before pytest.  Without root or a package manager it says so, and the tests
that need `dot` are skipped with that message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def main() -> int:
    if shutil.which("dot"):
        return 0
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("installing graphviz (Debian package) for the graph tests ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        done = subprocess.run(["apt-get", "install", "-y", "-qq", "graphviz"], check=False, env=env)
        if done.returncode == 0 and shutil.which("dot"):
            return 0
    print(
        "graphviz is not installed and cannot be installed here; the tests that render DOT "
        "will be skipped (install it with: apt-get install graphviz)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
