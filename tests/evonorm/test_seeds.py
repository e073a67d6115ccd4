"""The seed graphs, compiled by the generic path, must compute exactly what the hand-written layers compute."""
import pytest
import torch

import evonorm
from evonorm import seeds
from primitives import compile_graph

C, GROUPS = 24, 8
TOLERANCE = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}
LAYERS = {"evonorm_b0": evonorm.EvoNorm2dB0, "evonorm_b1": evonorm.EvoNorm2dB1, "evonorm_b2": evonorm.EvoNorm2dB2,
          "evonorm_s0": evonorm.EvoNorm2dS0, "evonorm_s1": evonorm.EvoNorm2dS1, "evonorm_s2": evonorm.EvoNorm2dS2}
# the hand-written layers call the graph's v1 `v`
NAME_IN_GRAPH = {"weight": "weight", "bias": "bias", "v": "v1", "running_var": "running_var"}


def make_pair(name, dtype, seed=0):
    cls = LAYERS[name]
    kwargs = {"groups": GROUPS} if name.startswith("evonorm_s") else {"momentum": 0.1}
    layer = cls(C, eps=1e-5, **kwargs).to(dtype)
    graph_layer = compile_graph(seeds.get(name), C, eps=1e-5, momentum=0.1, groups=GROUPS).to(dtype)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in layer.state_dict().items():
        drawn = torch.rand(value.shape, generator=gen, dtype=torch.float64) + 0.5 if key == "running_var" \
            else torch.randn(value.shape, generator=gen, dtype=torch.float64)
        state[key] = drawn.to(value.dtype)
    layer.load_state_dict(state)
    graph_layer.load_state_dict({NAME_IN_GRAPH[k]: v for k, v in state.items()})
    return layer, graph_layer


def run(layer, x, names):
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=x.dtype).view_as(out))
    grads = {names.get(n, n): p.grad for n, p in layer.named_parameters()}
    return out, x.grad, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_compiled_seed_matches_hand_written_layer(name, train, dtype):
    layer, graph_layer = make_pair(name, dtype)
    layer.train(train), graph_layer.train(train)
    gen = torch.Generator().manual_seed(1)
    for step in range(2):  # the second step sees the running variance the first one wrote
        x = (torch.randn(4, C, 5, 6, generator=gen, dtype=torch.float64) * 1.5 + 0.3).to(dtype)
        out, gx, grads = run(layer, x, NAME_IN_GRAPH)
        out_g, gx_g, grads_g = run(graph_layer, x, {})
        torch.testing.assert_close(out_g, out, **TOLERANCE[dtype])
        torch.testing.assert_close(gx_g, gx, **TOLERANCE[dtype])
        assert set(grads_g) == set(grads)
        for key in grads:
            torch.testing.assert_close(grads_g[key], grads[key], **TOLERANCE[dtype], msg=f"gradient of {key}")
        layer.zero_grad(), graph_layer.zero_grad()
    if hasattr(layer, "running_var") and layer.running_var is not None:
        torch.testing.assert_close(graph_layer.running_var, layer.running_var, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", list(LAYERS))
def test_seeds_by_short_name_and_formula(name):
    graph = seeds.get(name.removeprefix("evonorm_").upper())
    assert graph.name == name
    assert graph.uses_batch_stats == name.startswith("evonorm_b")
    assert "x" in graph.used_inputs


def test_known_formulas_and_unknown_seed():
    assert seeds.get("evonorm_s0").formula() == "x * sigmoid(v1 * x) / std_group(x)"
    assert seeds.get("evonorm_b0").formula() == "x / max(std_batch(x), v1 * x + std_instance(x))"
    with pytest.raises(ValueError, match="unknown seed graph 'evonorm_z9'; known seeds: evonorm_b0"):
        seeds.get("evonorm_z9")
