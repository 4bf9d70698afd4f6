"""Tests of vipo.bench.timing."""

import pytest
import torch

from vipo.bench import timing


def test_interleave_alternates_the_contenders_and_ratios_pair_the_rounds():
    order = []
    times = timing.interleave(
        {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "c": lambda: order.append("c")},
        repeats=3,
        warmup=1,
    )
    assert order == ["a", "b", "c", "a", "b", "c", "c", "b", "a", "a", "b", "c"]  # warm-up, then ABC CBA ABC
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    r = timing.Ratio.of([2.0, 3.0, 4.0], [1.0, 1.0, 2.0])
    assert (r.median, r.low, r.high, r.a, r.b, r.rounds) == (2.0, 2.0, 3.0, 3.0, 1.0, 3)  # per-round ratios 2, 3, 2
    assert r.fmt() == "2.00 [2.00, 3.00]"


def test_peak_memory_follows_the_call_s_own_tensors():
    def alloc():
        a = torch.zeros(1 << 18)  # 1 MiB
        b = torch.zeros(1 << 18)
        del a, b
        c = torch.zeros(1 << 17)  # 0.5 MiB, after the two were freed
        return c.sum()

    m = timing.peak_memory(alloc, held=100.0)
    assert m["step"] == pytest.approx(2 * 2**20, rel=0.01) and m["peak"] == m["step"] + 100.0
    lin = torch.nn.Linear(8, 8)
    opt = torch.optim.AdamW(lin.parameters())
    lin(torch.ones(1, 8)).sum().backward()
    opt.step()
    assert timing.held_bytes(lin, optimizer=opt) == 3 * (64 + 8) * 4 + 4 + 4  # weights, 2 moments, 2 step counts


def test_calls_count_module_rows_and_method_calls():
    lin = torch.nn.Linear(4, 4)

    class Obj:
        def encode(self, x):
            return x * 2

    obj = Obj()
    calls = timing.Calls(lin=lin, enc=(obj, "encode"))
    with calls.counting() as c:
        lin(torch.ones(3, 4))
        lin(torch.ones(2, 4))
        assert torch.equal(obj.encode(torch.ones(5, 1)), torch.full((5, 1), 2.0))
    assert (c.calls["lin"], c.rows["lin"], c.calls["enc"], c.rows["enc"]) == (2, 5, 1, 5)
    calls.close()
    lin(torch.ones(1, 4))
    assert c.calls["lin"] == 2 and "encode" not in vars(obj)
