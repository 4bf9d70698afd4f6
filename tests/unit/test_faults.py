"""Tests of vipo.faults."""

from vipo import faults


def test_fault_spec_and_noop():
    assert faults._parse("generate.after_commit:3=kill, train.loss:2+=nan") == {
        "generate.after_commit": (3, False, "kill"),
        "train.loss": (2, True, "nan"),
    }
    assert faults.value("anything", 1.5) == 1.5  # unset: a no-op
    faults.point("anything")
