"""The suite's order (tests/conftest.py HEAVY_FIRST): every file named there exists, and they come first."""

from pathlib import Path

from tests.conftest import HEAVY_FIRST, pytest_collection_modifyitems

ROOT = Path(__file__).resolve().parents[1]


def test_heavy_first_names_test_files_that_exist():
    missing = [p for p in HEAVY_FIRST if not (ROOT / p).is_file()]
    assert not missing, f"tests/conftest.py HEAVY_FIRST names files that are gone: {missing}"


def test_heavy_files_come_first_and_the_rest_keep_their_order():
    class Item:
        def __init__(self, nodeid):
            self.nodeid = nodeid

    ids = ["tests/unit/test_a.py::x", f"{HEAVY_FIRST[1]}::y", "tests/unit/test_b.py::z", f"{HEAVY_FIRST[0]}::w"]
    items = [Item(i) for i in ids]
    pytest_collection_modifyitems(None, items)
    assert [i.nodeid for i in items] == [ids[3], ids[1], ids[0], ids[2]]
