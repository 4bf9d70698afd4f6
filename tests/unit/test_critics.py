"""Tests of vipo.critics."""

from __future__ import annotations

import pytest

from vipo import config
from vipo.critics import CRITICS, critic_class
from vipo.critics.options import OPTIONS


@pytest.mark.parametrize("name", list(CRITICS))
def test_each_registered_critic_is_its_class_with_its_options(name):
    cls = critic_class(name)
    assert cls.name == name and cls.Options is OPTIONS[name]
    assert list(CRITICS) == list(OPTIONS) == list(config.CRITICS)
