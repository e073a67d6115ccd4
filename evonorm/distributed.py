"""EvoNorm B layers with the batch variance synchronised across processes, like SyncBatchNorm.

With data parallelism each process sees a slice of the batch; the batch
variance of the B variants (the only statistic that crosses samples) must then
be taken over the whole batch for training to match one process on the
concatenated batch. Forward all-gathers per-channel (mean, biased variance,
count) and combines them exactly (the parallel-variance formula); backward
all-reduces the gradient of the variance, since every process's loss depends
on every process's samples through it. One all-gather and one all-reduce of
3C and C numbers per layer and step. Eval mode, ``apply_act=False`` and a
single process fall back to the plain layer. S variants need nothing: their
statistics are per sample.
"""
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from . import _stats, layers

__all__ = ["convert_sync_evonorm", "sync_batch_var", "SYNC_CLASSES"]


class SyncBatchVar(torch.autograd.Function):
    """var over (N, *spatial) of the batch spread across ``group``; biased, as the layers' batch_var."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Optional[Any]) -> Tensor:
        dims = [0, *_stats.spatial_dims(x)]
        count = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        local = torch.stack([mean, var, torch.full_like(mean, count)])  # (3, C)
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        means, variances, counts = torch.stack(gathered).unbind(1)  # each (world, C)
        total = counts.sum(0)
        global_mean, global_var = _stats.merge_moments(means, variances * counts, counts, 0)
        ctx.save_for_backward(x, global_mean, total)
        ctx.group = group
        return global_var

    @staticmethod
    def backward(ctx: Any, grad_var: Tensor) -> Tuple[Tensor, None]:
        x, global_mean, total = ctx.saved_tensors
        grad_var = grad_var.clone()
        dist.all_reduce(grad_var, group=ctx.group)  # d(sum of every process's loss)/d var
        shape = [1, -1] + [1] * (x.dim() - 2)
        # d var / d x = 2 (x - mean) / N_total, for this process's share of the samples
        scale = (2 * grad_var / total).view(shape)
        return scale * (x - global_mean.view(shape)), None


def sync_batch_var(x: Tensor, group: Optional[Any] = None) -> Tensor:
    """Biased per-channel variance over (N, *spatial) of the batch split across ``group``."""
    return SyncBatchVar.apply(x, group)


class _SyncBatchVarMixin:
    """Takes the training batch variance of an EvoNorm B layer over every process of ``process_group``.

    Overriding ``_batch_var`` (a math hook) also keeps the layer on its reference path: the fused kernels
    compute the batch variance inside and cannot take a global one.
    """

    process_group: Optional[Any] = None

    def _batch_var(self, x: Tensor) -> Tensor:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1:
            return sync_batch_var(x, self.process_group)
        return super()._batch_var(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", process_group={self.process_group}"


_SYNC_DOC = ("{}, with its training batch variance taken over every process of ``process_group`` (see "
             "``evonorm.distributed``); build it with ``convert_sync_evonorm``.")


class SyncEvoNorm1dB0(_SyncBatchVarMixin, layers.EvoNorm1dB0):
    __doc__ = _SYNC_DOC.format("EvoNorm1dB0")


class SyncEvoNorm1dB1(_SyncBatchVarMixin, layers.EvoNorm1dB1):
    __doc__ = _SYNC_DOC.format("EvoNorm1dB1")


class SyncEvoNorm1dB2(_SyncBatchVarMixin, layers.EvoNorm1dB2):
    __doc__ = _SYNC_DOC.format("EvoNorm1dB2")


class SyncEvoNorm2dB0(_SyncBatchVarMixin, layers.EvoNorm2dB0):
    __doc__ = _SYNC_DOC.format("EvoNorm2dB0")


class SyncEvoNorm2dB1(_SyncBatchVarMixin, layers.EvoNorm2dB1):
    __doc__ = _SYNC_DOC.format("EvoNorm2dB1")


class SyncEvoNorm2dB2(_SyncBatchVarMixin, layers.EvoNorm2dB2):
    __doc__ = _SYNC_DOC.format("EvoNorm2dB2")


class SyncEvoNorm3dB0(_SyncBatchVarMixin, layers.EvoNorm3dB0):
    __doc__ = _SYNC_DOC.format("EvoNorm3dB0")


class SyncEvoNorm3dB1(_SyncBatchVarMixin, layers.EvoNorm3dB1):
    __doc__ = _SYNC_DOC.format("EvoNorm3dB1")


class SyncEvoNorm3dB2(_SyncBatchVarMixin, layers.EvoNorm3dB2):
    __doc__ = _SYNC_DOC.format("EvoNorm3dB2")


# {B layer class: its Sync subclass}; other B subclasses (timm_compat's) get theirs on first use
SYNC_CLASSES: Dict[type, type] = {cls.__bases__[1]: cls for cls in (  # bases: (the mixin, the layer)
    SyncEvoNorm1dB0, SyncEvoNorm1dB1, SyncEvoNorm1dB2, SyncEvoNorm2dB0, SyncEvoNorm2dB1, SyncEvoNorm2dB2,
    SyncEvoNorm3dB0, SyncEvoNorm3dB1, SyncEvoNorm3dB2)}
__all__ += sorted(c.__name__ for c in SYNC_CLASSES.values())


def _sync_class(cls: type) -> type:
    name = f"Sync{cls.__name__}"
    return type(name, (_SyncBatchVarMixin, cls), {"__module__": __name__, "__qualname__": name,
                                                  "__doc__": _SYNC_DOC.format(cls.__name__)})


def convert_sync_evonorm(module: nn.Module, process_group: Optional[Any] = None) -> nn.Module:
    """Replace every EvoNorm B layer with ``apply_act=True`` by its Sync twin; returns the module.

    Mirrors ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: the new layer shares the old one's
    parameters and ``running_var``, keeps its mode, and a B layer that is itself the root is
    returned replaced. Call it before wrapping the model in DistributedDataParallel.
    """
    if isinstance(module, layers._EvoNormBatch) and module.apply_act \
            and not isinstance(module, _SyncBatchVarMixin):
        if type(module) not in SYNC_CLASSES:  # e.g. timm_compat's Bessel-corrected layers
            SYNC_CLASSES[type(module)] = _sync_class(type(module))
        # every attribute carries over (options, mode, hooks); the containers are copied, the
        # parameters and running_var shared, as convert_sync_batchnorm shares them
        sync = SYNC_CLASSES[type(module)].__new__(SYNC_CLASSES[type(module)])
        sync.__dict__.update({k: v.copy() if isinstance(v, dict) else v
                              for k, v in module.__dict__.items()})
        sync.process_group = process_group
        return sync
    for name, child in module.named_children():
        new = convert_sync_evonorm(child, process_group)
        if new is not child:
            setattr(module, name, new)
    return module
