"""Generated layer source must compute exactly what the compiled graph computes, and script/export."""
import importlib.util
import random
import warnings

import pytest
import torch

from evonorm import seeds
from primitives import PAPER_OPS, LayerGraph, compile_graph, layer_source, mutate, random_graph


def load_layer(graph, tmp_path, name="Generated"):
    path = tmp_path / f"{name.lower()}_{graph.structural_hash()}.py"
    path.write_text(layer_source(graph, name))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def graphs():
    rng = random.Random(5)
    out = [seeds.get(n) for n in seeds.names()]
    while len(out) < 18:  # random graphs that read x and keep at least three nodes after pruning
        g = mutate(random_graph(rng, PAPER_OPS, 10), rng, PAPER_OPS)
        if "x" in g.used_inputs and len(g.pruned()) >= 3:
            out.append(g)
    return out


def same_state(a, b, seed):
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.rand(v.shape, generator=gen) + 0.5 for k, v in a.state_dict().items()}
    a.load_state_dict(state)
    b.load_state_dict(state)


@pytest.mark.parametrize("graph", graphs(), ids=lambda g: g.name or g.structural_hash())
def test_generated_layer_is_bit_identical_to_the_compiled_graph(graph, tmp_path):
    cls = load_layer(graph, tmp_path)
    generated, compiled = cls(24, groups=8), compile_graph(graph, 24, groups=8)
    assert sorted(generated.state_dict()) == sorted(compiled.state_dict())
    same_state(generated, compiled, seed=0)
    gen = torch.Generator().manual_seed(1)
    for train in (True, True, False):
        generated.train(train), compiled.train(train)
        x = torch.randn(3, 24, 4, 5, generator=gen)
        torch.testing.assert_close(generated(x), compiled(x), rtol=0, atol=0, equal_nan=True)
    for name, buf in compiled.named_buffers():
        assert torch.equal(getattr(generated, name), buf)
    assert graph.formula() in (cls.__doc__ or "")
    assert "apply_act=True" in repr(generated)


FOLD_CASES = [  # outputs the compiler folds into the affine weight, and outputs it must leave alone
    [("n1", "mul", ("x", "v1"))],
    [("n1", "std_group", ("x",)), ("n2", "mul", ("n1", "x"))],
    [("n1", "std_batch", ("x",)), ("n2", "div", ("x", "n1"))],
    [("n1", "sigmoid", ("x",)), ("n2", "std_layer", ("x",)), ("n3", "div", ("n1", "n2"))],
    [("n1", "std_batch", ("x",)), ("n2", "mean_batch", ("x",)), ("n3", "mul", ("n1", "n2"))],  # reduced
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", FOLD_CASES, ids=lambda rows: LayerGraph.from_nodes(rows).formula())
def test_generated_layer_folds_the_output_scale_as_the_compiler_does(rows, dtype, tmp_path):
    graph = LayerGraph.from_nodes(rows)
    generated = load_layer(graph, tmp_path)(8, groups=4).to(dtype)
    compiled = compile_graph(graph, 8, groups=4).to(dtype)
    same_state(generated, compiled, seed=2)
    gen = torch.Generator().manual_seed(3)
    for train in (True, False):
        generated.train(train), compiled.train(train)
        x = torch.randn(2, 8, 3, 3, generator=gen).to(dtype)
        torch.testing.assert_close(generated(x), compiled(x), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", ["evonorm_b0", "evonorm_s0"])
def test_generated_seed_scripts_and_matches_the_hand_written_layer(name, tmp_path):
    import evonorm
    cls = load_layer(seeds.get(name), tmp_path)
    hand = (evonorm.EvoNorm2dB0(16) if name.endswith("b0") else evonorm.EvoNorm2dS0(16, groups=8))
    generated = cls(16, groups=8)
    gen = torch.Generator().manual_seed(2)
    state = {k: torch.rand(v.shape, generator=gen) + 0.5 for k, v in hand.state_dict().items()}
    hand.load_state_dict(state)
    generated.load_state_dict({("v1" if k == "v" else k): v for k, v in state.items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(generated)
    x = torch.randn(4, 16, 6, 6, generator=gen)
    for train in (True, False):
        hand.train(train), scripted.train(train)
        torch.testing.assert_close(scripted(x), hand(x), rtol=1e-5, atol=1e-6)


def test_affine_only_and_bad_input(tmp_path):
    cls = load_layer(seeds.get("evonorm_s0"), tmp_path)
    layer = cls(8, apply_act=False)
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(layer(x), x)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 8, \*spatial\)"):
        layer(torch.randn(2, 7, 3, 3))
    with pytest.raises(ValueError, match="not a Python identifier"):
        layer_source(seeds.get("evonorm_s0"), "my layer")
