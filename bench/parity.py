"""Parity of the hand-written layers and the compiled seed graphs against float64, forward and backward.

    python bench/parity.py [--shape 8 32 14 14] [--groups 8]

For each variant, mode and dtype it prints the largest absolute and relative difference of the output and
of every gradient (input and parameters) from the hand-written layer run in float64 on the same
randomised parameters (the hand-written layers themselves are checked against an independent float64
reference in tests/evonorm/test_layers.py). Relative differences are taken where the float64 value is at least 1e-3 in size.
"""
import argparse

import torch

import evonorm
from primitives import compile_graph

VARIANTS = {"B0": evonorm.EvoNorm2dB0, "B1": evonorm.EvoNorm2dB1, "B2": evonorm.EvoNorm2dB2,
            "S0": evonorm.EvoNorm2dS0, "S1": evonorm.EvoNorm2dS1, "S2": evonorm.EvoNorm2dS2}
GRAPH_NAME = {"weight": "weight", "bias": "bias", "v": "v1", "running_var": "running_var"}


def build(name, groups, state, dtype, compiled):
    c = state["weight"].numel()
    if compiled:
        layer = compile_graph(evonorm.seeds.get(name), c, groups=groups)
        state = {GRAPH_NAME[k]: v for k, v in state.items()}
    else:
        layer = VARIANTS[name](c, **({"groups": groups} if name.startswith("S") else {}))
    layer = layer.to(dtype)
    layer.load_state_dict(state)
    return layer


def outputs(layer, x, train):
    layer.train(train)
    x = x.clone().requires_grad_(True)
    out = layer(x)
    out.backward(torch.cos(torch.arange(out.numel(), dtype=torch.float64)).view_as(out).to(out.dtype))
    grads = {n: p.grad for n, p in layer.named_parameters()}
    return [out, x.grad] + [grads[k] for k in sorted(grads)]


def diff(a, ref):
    a, ref = a.double(), ref.double()
    abs_diff = (a - ref).abs()
    big = ref.abs() >= 1e-3
    rel = (abs_diff[big] / ref.abs()[big]).max().item() if big.any() else 0.0
    return abs_diff.max().item(), rel


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[8, 32, 14, 14])
    parser.add_argument("--groups", type=int, default=8)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.shape, generator=gen, dtype=torch.float64) * 1.5 + 0.3
    print(f"{'layer':6} {'impl':9} {'mode':5} {'dtype':8} {'out abs':>9} {'out rel':>9} {'grad abs':>9} {'grad rel':>9}")
    for name in VARIANTS:
        template = VARIANTS[name](args.shape[1]).state_dict()
        state = {k: (torch.rand(v.shape, generator=gen, dtype=torch.float64) + 0.5) if k == "running_var"
                 else torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in template.items()}
        for train in (True, False):
            ref = outputs(build(name, args.groups, state, torch.float64, False), x, train)
            for compiled in (False, True):
                for dtype in (torch.float32, torch.float64) if compiled else (torch.float32,):
                    got = outputs(build(name, args.groups, state, dtype, compiled), x.to(dtype), train)
                    out_abs, out_rel = diff(got[0], ref[0])
                    grad = [diff(g, r) for g, r in zip(got[1:], ref[1:])]
                    print(f"{name:6} {'compiled' if compiled else 'layer':9} {'train' if train else 'eval':5} "
                          f"{str(dtype)[6:]:8} {out_abs:9.1e} {out_rel:9.1e} {max(g[0] for g in grad):9.1e} "
                          f"{max(g[1] for g in grad):9.1e}")


if __name__ == "__main__":
    main()
