"""``ray start`` for a node that stays on this machine: every server it starts on 127.0.0.1.

``python infra/ray_local_node.py start --address=127.0.0.1:PORT ...`` takes ``ray start``'s
arguments. Ray binds a node's servers to the address other machines see (``--node-ip-address``
127.0.0.1 is resolved to it) unless its single-host mode is on, and in that mode ``ray start``
refuses to join a head. Here the processes the node starts run in single-host mode (the
environment variable, read by each at import) while this command may join the head, with
"this machine's address" meaning 127.0.0.1. infra/local-cluster.sh starts its worker node so.
"""

import os
import sys

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray's import: its processes

from ray._private import ray_constants, services  # noqa: E402
from ray.scripts.scripts import main  # noqa: E402

ray_constants.ENABLE_RAY_CLUSTER = True  # this command only: a worker node may join


def _loopback(address=None) -> str:
    return services.get_localhost_ip()


services.get_node_ip_address = _loopback

if __name__ == "__main__":
    sys.exit(main())
