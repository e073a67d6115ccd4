"""Use the EvoNorm layers inside timm models and load timm's EvoNorm checkpoints.

timm (``timm/layers/evo_norm.py``) and this package compute the same forward
for B0 and S0 given the same ``eps`` (timm's B0 defaults to ``eps=1e-3``, ours
to 1e-5 as the official code; see ``TIMM_EPS``), and name parameters and
buffers alike (``weight``, ``bias``, ``v``, ``running_var``). One convention
differs: timm stores ``n / (n - 1)`` times the batch variance in
``running_var`` (Bessel's correction, as BatchNorm), the authors' code and our
layers store the biased variance. After training the two running variances
therefore differ, and so do eval-mode B outputs. ``bessel_running_var`` makes
a B layer that follows timm's convention, for checkpoints trained with timm.

Nothing here touches timm's registry: ``timm_norm_act`` returns a plain
function to pass as ``norm_layer=`` to the timm models that build norm+act
layers (EfficientNet, MobileNetV3, RegNet, ByobNet...). Models that take a
separate ``norm_layer`` and ``act_layer`` (timm's ResNet, torchvision) accept
the layer classes directly, but then keep their own activation after it;
``evonorm.convert`` gives the paper's placement instead.
"""
from typing import Dict, Mapping, Optional

from torch import Tensor, nn

from .convert import layer_class
from .layers import _EvoNormBatch

__all__ = ["TIMM_EPS", "bessel_running_var", "timm_norm_act", "load_timm_state_dict"]

# timm constructor defaults where they differ from ours (1e-5 everywhere)
TIMM_EPS: Dict[str, float] = {"B0": 1e-3}

_BESSEL_CLASSES: Dict[type, type] = {}


class _BesselRunningVar:
    """Mixin: fold ``n / (n - 1)`` times the batch variance into ``running_var``, as timm does.

    n is the per-channel sample count N * spatial size of the batch. Only the running update
    changes (the ``_update_running_var`` hook), so the fused path stays available.
    """

    def _update_running_var(self, var: Tensor, count: int) -> None:
        super()._update_running_var(var * (count / max(count - 1, 1)), count)  # 1: timm divides by zero


def bessel_running_var(layer_cls: type) -> type:
    """The subclass of EvoNorm B layer ``layer_cls`` whose ``running_var`` follows timm (unbiased).

    Example: ``EvoNorm2dB0T = bessel_running_var(evonorm.EvoNorm2dB0)``. Not scriptable
    (TorchScript has no ``super()``). Under ``convert_sync_evonorm`` the variance is global but
    n stays the local count, as timm has no synchronised form to match.
    """
    if not (isinstance(layer_cls, type) and issubclass(layer_cls, _EvoNormBatch)):
        raise ValueError(f"bessel_running_var needs an EvoNorm B layer class (it has a running "
                         f"variance), got {layer_cls!r}")
    if layer_cls not in _BESSEL_CLASSES:
        name = f"{layer_cls.__name__}Bessel"
        _BESSEL_CLASSES[layer_cls] = type(name, (_BesselRunningVar, layer_cls), {
            "__module__": __name__, "__qualname__": name,
            "__doc__": f"{layer_cls.__name__} storing the Bessel-corrected running variance, as timm."})
    return _BESSEL_CLASSES[layer_cls]


def timm_norm_act(layer: str = "S0", bessel: bool = False, **layer_kwargs):
    """A ``norm_layer=`` for timm's norm+act models: ``timm.create_model(name, norm_layer=timm_norm_act("S0"))``.

    timm calls it as ``f(num_features, apply_act=..., inplace=..., act_kwargs=..., **kwargs)``.
    ``inplace`` and ``act_kwargs`` configure the activation EvoNorm replaces and are ignored;
    a ``drop_layer`` cannot be kept and is refused. ``bessel`` selects ``bessel_running_var``.
    """
    cls = layer_class(layer, 2)
    if bessel:
        cls = bessel_running_var(cls)

    def evonorm_norm_act(num_features: int, apply_act: bool = True, inplace: Optional[bool] = None,
                         act_kwargs: Optional[dict] = None, drop_layer: Optional[type] = None,
                         **kwargs) -> nn.Module:
        if drop_layer is not None:
            raise ValueError(f"{cls.__name__} cannot apply drop_layer={drop_layer!r} between "
                             "normalisation and activation")
        return cls(num_features, apply_act=apply_act, **{**layer_kwargs, **kwargs})

    evonorm_norm_act.__qualname__ = evonorm_norm_act.__name__ = f"timm_norm_act_{cls.__name__}"
    return evonorm_norm_act


def load_timm_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True):
    """``module.load_state_dict`` for a checkpoint saved with timm's EvoNorm layers.

    timm's B layers keep an unused ``running_var`` when ``apply_act=False``; ours have none, so
    those entries are dropped. Everything else must match as in ``load_state_dict``.
    """
    unused = {f"{name}.running_var" if name else "running_var"
              for name, m in module.named_modules()
              if isinstance(m, _EvoNormBatch) and m.running_var is None}
    return module.load_state_dict({k: v for k, v in state_dict.items() if k not in unused},
                                  strict=strict)
