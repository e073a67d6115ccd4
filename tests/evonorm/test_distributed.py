"""SyncEvoNorm on 2 gloo processes equals one process on the concatenated batch.

One spawn runs every case (process start-up dominates); each rank saves what it
computed and the test process compares it with the plain layer run on the whole
batch here, where no process group exists.
"""
import copy
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import evonorm
from evonorm.distributed import SYNC_CLASSES, SyncEvoNorm2dB0, _SyncBatchVarMixin, convert_sync_evonorm
from evonorm.timm_compat import bessel_running_var

WORLD = 2
SPLIT = (2, 3)  # uneven per-rank batch sizes: counts must weight the combination
TOL = dict(rtol=1e-5, atol=1e-6)
CASES = [("B0", 2), ("B1", 2), ("B2", 2), ("B0", 1), ("B0", 3)]
STEPS = 3


def _layer(variant, dims, seed, impl="reference"):
    layer = getattr(evonorm, f"EvoNorm{dims}d{variant}")(6, momentum=0.3, impl=impl)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(6, generator=g) * 0.5 + 1)
        layer.running_var.copy_(torch.rand(6, generator=g) + 0.5)
    return layer


def _batches(dims, seed):
    """STEPS (input, output-gradient) pairs of the full batch; channel 2 shifted to vary stats."""
    g = torch.Generator().manual_seed(seed)
    shape = (sum(SPLIT), 6) + (3, 4, 2)[:dims]
    out = []
    for _ in range(STEPS):
        x = torch.randn(shape, generator=g) * 2
        x[:, 2] += 3
        out.append((x, torch.randn(shape, generator=g)))
    return out


def _model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _ddp_data():
    g = torch.Generator().manual_seed(7)
    return torch.randn(sum(SPLIT), 3, 6, 6, generator=g), torch.randint(0, 4, (sum(SPLIT),), generator=g)


def _rows(rank):
    start = sum(SPLIT[:rank])
    return slice(start, start + SPLIT[rank])


def _worker(rank, store_dir):
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pairs bind to the loopback, never the machine's other interface
    dist.init_process_group("gloo", init_method=f"file://{store_dir}/store", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    rows = _rows(rank)
    results = {}
    for i, (variant, dims) in enumerate(CASES):
        # built as users build them (fused by default): the Sync class must still sync
        sync = convert_sync_evonorm(_layer(variant, dims, seed=i, impl="fused"))
        steps = []
        for x, gy in _batches(dims, seed=100 + i):
            xr = x[rows].clone().requires_grad_(True)
            y = sync(xr)
            (y * gy[rows]).sum().backward()
            grads = [p.grad.clone() for p in sync.parameters()]
            for grad in grads:  # what DDP does (before its averaging)
                dist.all_reduce(grad)
            steps.append((y.detach(), xr.grad, grads, sync.running_var.clone()))
            sync.zero_grad()
        sync.eval()
        results[(variant, dims)] = steps, sync(x[rows]).detach()

    # a converted model trained under DistributedDataParallel
    model, _ = evonorm.convert(_model(seed=3), "B0")
    ddp = nn.parallel.DistributedDataParallel(convert_sync_evonorm(model))
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x, t = _ddp_data()
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(ddp(x[rows]), t[rows], reduction="sum").backward()
        opt.step()
    results["ddp"] = {k: v.clone() for k, v in ddp.module.state_dict().items()}
    torch.save(results, os.path.join(store_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    store_dir = str(tmp_path_factory.mktemp("gloo"))
    mp.spawn(_worker, args=(store_dir,), nprocs=WORLD, join=True)
    return [torch.load(os.path.join(store_dir, f"rank{r}.pt")) for r in range(WORLD)]


@pytest.mark.parametrize("variant,dims", CASES)
def test_sync_matches_one_process_on_the_concatenated_batch(ranks, variant, dims):
    i = CASES.index((variant, dims))
    ref = _layer(variant, dims, seed=i)
    for step, (x, gy) in enumerate(_batches(dims, seed=100 + i)):
        x = x.clone().requires_grad_(True)
        y = ref(x)
        (y * gy).sum().backward()
        for rank in range(WORLD):
            y_r, gx_r, grads_r, rv_r = ranks[rank][(variant, dims)][0][step]
            rows = _rows(rank)
            torch.testing.assert_close(y_r, y.detach()[rows], **TOL)
            torch.testing.assert_close(gx_r, x.grad[rows], **TOL)
            for got, p in zip(grads_r, ref.parameters()):
                torch.testing.assert_close(got, p.grad, **TOL)
            torch.testing.assert_close(rv_r, ref.running_var, **TOL)
        ref.zero_grad()
    ref.eval()
    for rank in range(WORLD):
        torch.testing.assert_close(ranks[rank][(variant, dims)][1], ref(x.detach()[_rows(rank)]), **TOL)


def test_local_batch_statistics_differ_from_the_global_ones(ranks):
    """Guards the test above: without the sync, rank 0 would see other statistics."""
    x, _ = _batches(2, seed=100)[0]
    local = _layer("B0", 2, seed=0)(x[_rows(0)])
    assert not torch.allclose(local, ranks[0][("B0", 2)][0][0][0], **TOL)


def test_ddp_training_matches_one_process(ranks):
    model, _ = evonorm.convert(_model(seed=3), "B0", impl="reference")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = _ddp_data()
    for _ in range(2):
        opt.zero_grad()
        # DDP averages the ranks' gradients of their summed losses
        (nn.functional.cross_entropy(model(x), t, reduction="sum") / WORLD).backward()
        opt.step()
    for rank in range(WORLD):
        got = ranks[rank]["ddp"]
        assert got.keys() == model.state_dict().keys()
        for k, v in model.state_dict().items():
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_convert_sync_evonorm_swaps_only_batch_layers_and_shares_state():
    model = nn.Sequential(evonorm.EvoNorm2dB0(4), evonorm.EvoNorm2dS0(4),
                          nn.Sequential(evonorm.EvoNorm3dB2(4), evonorm.EvoNorm2dB1(4, apply_act=False)))
    before = copy.copy(list(model.modules()))
    model.eval()
    out = convert_sync_evonorm(model, process_group=None)
    assert out is model
    assert type(model[0]) is SyncEvoNorm2dB0 and type(model[2][0]) is SYNC_CLASSES[evonorm.EvoNorm3dB2]
    assert type(model[1]) is evonorm.EvoNorm2dS0  # per-sample statistics: nothing to sync
    assert type(model[2][1]) is evonorm.EvoNorm2dB1  # affine-only: no batch statistics
    assert model[0].weight is before[1].weight and model[0].running_var is before[1].running_var
    assert not model[0].training
    repr(model)
    root = evonorm.EvoNorm1dB0(3)
    assert type(convert_sync_evonorm(root)) is SYNC_CLASSES[evonorm.EvoNorm1dB0]
    assert convert_sync_evonorm(model[0]) is model[0]  # already synchronised
    bessel = convert_sync_evonorm(bessel_running_var(evonorm.EvoNorm2dB0)(3))
    assert isinstance(bessel, _SyncBatchVarMixin) and "Bessel" in type(bessel).__name__


def test_sync_layer_without_process_group_is_the_plain_layer():
    layer = _layer("B0", 2, seed=0)
    sync = convert_sync_evonorm(copy.deepcopy(layer))
    x, _ = _batches(2, seed=5)[0]
    torch.testing.assert_close(sync(x), layer(x), rtol=0, atol=0)
    torch.testing.assert_close(sync.running_var, layer.running_var, rtol=0, atol=0)
