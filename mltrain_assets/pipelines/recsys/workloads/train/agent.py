"""torchrun, with every TCP store it hosts listening on one address only.

``python -m mltrain_assets.pipelines.recsys.workloads.train.agent <torchrun arguments>`` is
``python -m torch.distributed.run`` except for where its stores listen. PyTorch's ``TCPStore``
server (the c10d rendezvous store, and the store rank 0's agent starts for the workers) binds
every interface of the machine whatever host it is given; on a laptop or a shared node that
exposes the rendezvous to the whole network. Here a store that hosts listens on a socket bound to
``$MLTRAIN_RDZV_BIND`` alone (loopback for one node; the pod's IP on a multi-node Job), handed
over through ``TCPStore``'s ``master_listen_fd``. Gloo and NCCL pair sockets are kept on the same
interface by ``GLOO_SOCKET_IFNAME`` / ``NCCL_SOCKET_IFNAME`` (set by the launcher).

Several nodes re-rendezvous when one is replaced (``--max-restarts``): each round's workers' store
is looked up afresh (``install_store_info_per_round``), which torch's handler alone does not do.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

BIND_ENV = "MLTRAIN_RDZV_BIND"
_SIOCGIFADDR = 0x8915


def interface_of(address: str) -> str | None:
    """The name of the network interface holding IPv4 ``address`` (``lo`` for 127.0.0.1), or ``None``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # an interface without an IPv4 address
            if socket.inet_ntoa(packed[20:24]) == address:
                return name
    return None


def install_bound_stores(address: str) -> None:
    """Make every ``TCPStore`` that hosts (``is_master``) listen on ``address`` only, in this process."""
    import torch.distributed as dist
    from torch.distributed import rendezvous
    from torch.distributed.elastic.rendezvous import c10d_rendezvous_backend, static_tcp_rendezvous

    base = dist.TCPStore

    class BoundTCPStore(base):
        def __init__(self, host_name, port, world_size=None, is_master=False, *args, **kwargs):
            if is_master and kwargs.get("master_listen_fd") is None:
                listener = socket.create_server((address, int(port)), backlog=1024)
                port = listener.getsockname()[1]
                kwargs["master_listen_fd"] = listener.fileno()
            else:
                listener = None
            super().__init__(host_name, port, world_size, is_master, *args, **kwargs)
            self._mltrain_listener = listener  # the store serves on this socket: keep it open as long

    for module in (dist, rendezvous, c10d_rendezvous_backend, static_tcp_rendezvous):
        module.TCPStore = BoundTCPStore


def install_store_info_per_round() -> None:
    """Have every rendezvous round publish (rank 0) and read (the others) where the workers' store is.

    torch 2.13's c10d handler keeps the first round's answer: after a node is replaced (evicted,
    preempted), an agent that was rank 0 never writes ``MASTER_ADDR`` under the new round, so the
    replacement waits for it until the store times out; an agent that became rank 1 would hand its
    workers its own old store. Forgetting it before each round makes each round build it afresh
    (rank 0 serves a new store).
    """
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler

    if getattr(DynamicRendezvousHandler, "_mltrain_per_round", False):
        return
    original = DynamicRendezvousHandler.next_rendezvous

    def next_rendezvous(self):
        self._bootstrap_store_info = None
        self._shared_tcp_store_server = None
        return original(self)

    DynamicRendezvousHandler.next_rendezvous = next_rendezvous  # type: ignore[method-assign]
    DynamicRendezvousHandler._mltrain_per_round = True  # type: ignore[attr-defined]


def main() -> None:
    address = os.environ.get(BIND_ENV)
    if address:
        install_bound_stores(address)
    install_store_info_per_round()
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:])


if __name__ == "__main__":
    main()
