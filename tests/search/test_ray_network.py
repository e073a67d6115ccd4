"""The local Ray instance listens on 127.0.0.1 only, and refuses a caller without its token.

In its single-machine mode (``search.executor.SINGLE_MACHINE_ENV``) Ray binds every server, the C++ gRPC
ones (GCS, raylet, each worker's core worker) and the Python agents, to the loopback address; Ray's token
authentication, on by default, guards them from other users of the machine. These tests pin both facts,
reading the kernel's socket tables, so that a Ray upgrade that changes either is noticed.
"""
import os

import grpc
import pytest

from tests.search.sockets import LOOPBACK, LOOPBACKS, listening_names


def test_local_ray_listens_on_loopback_only(ray_session):
    @ray_session.remote
    def ping():
        return os.getpid()

    ray_session.get([ping.remote() for _ in range(2)])
    by_address = listening_names(os.getpid())
    assert any("gcs_server" in names for names in by_address.values()), "the test did not find the instance's processes"
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
