"""The local Ray instance listens on 127.0.0.1 only, and refuses a caller without its token.

In its single-machine mode (``search.executor.SINGLE_MACHINE_ENV``) Ray binds every server, the C++ gRPC
ones (GCS, raylet, each worker's core worker) and the Python agents, to the loopback address; Ray's token
authentication, on by default, guards them from other users of the machine. These tests pin both facts,
reading the kernel's socket tables, so that a Ray upgrade that changes either is noticed.
"""
import os
import socket
from pathlib import Path

import grpc
import pytest

LOOPBACK = "127.0.0.1"
LOOPBACKS = {LOOPBACK, "::1"}
LISTEN = "0A"


def _address(hex_address: str) -> str:
    """An address of ``/proc/net/tcp`` or ``tcp6`` (little-endian 32-bit words) in the usual notation."""
    words = bytes.fromhex(hex_address)
    raw = b"".join(words[i:i + 4][::-1] for i in range(0, len(words), 4))
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if raw[:12] == b"\0" * 10 + b"\xff\xff":  # an IPv4 address mapped into IPv6
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw)


def _listening() -> dict[int, tuple[str, int]]:
    """Socket inode -> (address, port) of every listening TCP socket, IPv4 and IPv6."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                host, port = fields[1].split(":")
                found[int(fields[9])] = (_address(host), int(port, 16))
    return found


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    family, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in family} - family
        family |= new
        grew = bool(new)
    return family


def _sockets_of(pids: set[int]) -> dict[int, str]:
    """Socket inode -> the name of the process holding it."""
    out = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    out[int(target[8:-1])] = name
        except OSError:
            continue
    return out


def test_local_ray_listens_on_loopback_or_on_its_grpc_servers_only(ray_session):
    @ray_session.remote
    def ping():
        return os.getpid()

    ray_session.get([ping.remote() for _ in range(2)])
    listening = _listening()
    held = {inode: name for inode, name in _sockets_of(_descendants(os.getpid())).items() if inode in listening}
    assert any(name == "gcs_server" for name in held.values()), "the test did not find the instance's processes"
    by_address = {}
    for inode, name in held.items():
        by_address.setdefault(listening[inode][0], set()).add(name)
    assert set(by_address) <= LOOPBACKS, f"Ray listens beyond the loopback address: {by_address}"
    assert {"gcs_server", "raylet"} <= by_address[LOOPBACK]


def test_the_gcs_refuses_a_caller_without_the_token(ray_session):
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    address = ray_session._private.worker.global_worker.node.gcs_address
    assert address.startswith(f"{LOOPBACK}:")
    with grpc.insecure_channel(address) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value
