"""Our layers against timm's EvoNorm2dB0/S0 (an independent implementation) and inside timm models."""
from functools import partial

import pytest
import timm
import torch
from timm.layers import evo_norm as timm_evo
from timm.layers.create_norm_act import _NORM_ACT_MAP

import evonorm
from evonorm.timm_compat import TIMM_EPS, bessel_running_var, load_timm_state_dict, timm_norm_act

C = 16
TOL = dict(rtol=1e-5, atol=1e-6)


def _randomise(layer, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in layer.parameters():
            t.copy_(torch.randn(t.shape, generator=g) * 0.5 + 1)
        if getattr(layer, "running_var", None) is not None:
            layer.running_var.copy_(torch.rand(C, generator=g) + 0.5)
    return layer


def _x(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, C, 5, 3, generator=g) * 2 + 0.5


def _pair(name, apply_act, impl, bessel=False, **kwargs):
    theirs = _randomise(getattr(timm_evo, f"EvoNorm2d{name}")(C, apply_act=apply_act, **kwargs), 0)
    cls = getattr(evonorm, f"EvoNorm2d{name}")
    ours = (bessel_running_var(cls) if bessel else cls)(
        C, apply_act=apply_act, eps=theirs.eps, impl=impl, **kwargs)
    load_timm_state_dict(ours, theirs.state_dict())
    return theirs, ours


def _forward_backward(layer, x):
    x = x.clone().requires_grad_(True)
    y = layer(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y.detach(), x.grad, {n: p.grad for n, p in layer.named_parameters()}


def _assert_same(theirs, ours, x):
    y_t, gx_t, gp_t = _forward_backward(theirs, x)
    y_o, gx_o, gp_o = _forward_backward(ours, x)
    torch.testing.assert_close(y_o, y_t, **TOL)
    torch.testing.assert_close(gx_o, gx_t, **TOL)
    assert gp_o.keys() == gp_t.keys()
    for k in gp_t:
        torch.testing.assert_close(gp_o[k], gp_t[k], **TOL, msg=k)


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("apply_act", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_s0_equals_timm(impl, apply_act, training):
    theirs, ours = _pair("S0", apply_act, impl, groups=4)
    theirs.train(training), ours.train(training)
    _assert_same(theirs, ours, _x())


@pytest.mark.parametrize("impl", ["reference", "fused"])
@pytest.mark.parametrize("apply_act", [True, False])
def test_b0_equals_timm_in_train_mode(impl, apply_act):
    assert TIMM_EPS["B0"] == timm_evo.EvoNorm2dB0(C).eps == 1e-3
    theirs, ours = _pair("B0", apply_act, impl)
    _assert_same(theirs, ours, _x())


def test_b0_running_variance_is_the_one_convention_that_differs():
    """timm folds n/(n-1) * batch variance into running_var; the official code the biased one."""
    theirs, ours = _pair("B0", True, "reference")
    _, bessel = _pair("B0", True, "reference", bessel=True)
    r0 = theirs.running_var.clone()
    x = _x()
    for layer in (theirs, ours, bessel):
        layer(x)
    n = x.numel() // C
    batch_var = x.var(dim=(0, 2, 3), correction=0)
    m = ours.momentum
    torch.testing.assert_close(ours.running_var, (1 - m) * r0 + m * batch_var, **TOL)
    torch.testing.assert_close(theirs.running_var, (1 - m) * r0 + m * batch_var * n / (n - 1), **TOL)
    torch.testing.assert_close(bessel.running_var, theirs.running_var, **TOL)
    for layer in (theirs, ours, bessel):
        layer.eval()
    x = _x(seed=2)
    torch.testing.assert_close(bessel(x), theirs(x), **TOL)
    assert not torch.allclose(ours(x), theirs(x), **TOL)


def test_bessel_option_keeps_the_fused_path_and_refuses_sample_layers():
    theirs, fused = _pair("B0", True, "fused", bessel=True)
    for _ in range(2):
        theirs(_x()), fused(_x())
    torch.testing.assert_close(fused.running_var, theirs.running_var, **TOL)
    assert bessel_running_var(evonorm.EvoNorm2dB0) is type(fused)
    repr(fused)
    with pytest.raises(ValueError, match="needs an EvoNorm B layer class"):
        bessel_running_var(evonorm.EvoNorm2dS0)


def test_plain_load_state_dict_rejects_timm_affine_only_b0_and_helper_loads_it():
    theirs = timm_evo.EvoNorm2dB0(C, apply_act=False)
    ours = evonorm.EvoNorm2dB0(C, apply_act=False)
    with pytest.raises(RuntimeError, match="running_var"):
        ours.load_state_dict(theirs.state_dict())
    assert str(load_timm_state_dict(ours, theirs.state_dict())) == "<All keys matched successfully>"
    with pytest.raises(RuntimeError, match="Missing key"):  # the rest stays strict
        load_timm_state_dict(ours, {"weight": theirs.weight})


def test_timm_checkpoint_loads_into_a_model_built_with_our_layers():
    torch.manual_seed(0)
    theirs = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10, norm_layer="evonormb0")
    _randomise_model(theirs)
    norm_act = timm_norm_act("B0", bessel=True, eps=TIMM_EPS["B0"], impl="reference")
    ours = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10, norm_layer=norm_act)
    load_timm_state_dict(ours, theirs.state_dict())
    norms = {type(m).__name__ for m in ours.modules() if "EvoNorm" in type(m).__name__}
    assert norms == {"EvoNorm2dB0Bessel"}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)  # train mode
    theirs.eval(), ours.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def _randomise_model(model):
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, timm_evo.EvoNorm2dB0):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_timm_create_model_takes_our_layers_as_norm_layer():
    # ResNet: separate norm_layer and act_layer, the class (or a partial of it) goes in directly
    model = timm.create_model("resnet18", pretrained=False, num_classes=10,
                              norm_layer=partial(evonorm.EvoNorm2dS0, impl="reference"))
    norms = [m for m in model.modules() if isinstance(m, evonorm.EvoNorm2dS0)]
    assert len(norms) == 20 and all(m.apply_act for m in norms)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # EfficientNet builds norm+act layers: the factory, with timm's apply_act=False where it wants them
    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=10,
                              norm_layer=timm_norm_act("S0", impl="reference"))
    norms = [m for m in model.modules() if isinstance(m, evonorm.EvoNorm2dS0)]
    assert (sum(m.apply_act for m in norms), sum(not m.apply_act for m in norms)) == (33, 16)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_timm_norm_act_factory_refuses_what_it_cannot_keep():
    make = timm_norm_act("b0", momentum=0.2)
    layer = make(8, apply_act=False, inplace=True, act_kwargs={})
    assert type(layer) is evonorm.EvoNorm2dB0 and not layer.apply_act and layer.momentum == 0.2
    assert make(8, eps=1e-3).eps == 1e-3  # timm's partial(..., eps=) reaches the layer
    with pytest.raises(ValueError, match="drop_layer"):
        make(8, drop_layer=torch.nn.Dropout)
    with pytest.raises(TypeError):
        make(8, act_layer=torch.nn.ReLU)  # no silent swallowing
    with pytest.raises(ValueError, match="unknown EvoNorm layer"):
        timm_norm_act("S7")


def test_timm_registry_is_left_alone():
    assert _NORM_ACT_MAP["evonormb0"] is timm_evo.EvoNorm2dB0
    assert _NORM_ACT_MAP["evonorms0"] is timm_evo.EvoNorm2dS0
