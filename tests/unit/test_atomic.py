"""Tests of vipo.io.atomic."""


def test_interrupted_replacement_is_recovered(tmp_path):
    from vipo.io import atomic

    with atomic.atomic_dir(tmp_path / "state") as d:
        (d / "x").write_text("1")
    (tmp_path / "state").rename(tmp_path / ".tmp-state.old")  # killed between atomic_dir's two renames
    atomic.recover(tmp_path / "state")
    assert (tmp_path / "state" / "x").read_text() == "1" and atomic.is_complete(tmp_path / "state")


def test_atomic_writes_follow_the_umask(tmp_path):
    import os
    import stat

    from vipo.io import atomic

    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as d:
        (d / "y").write_text("y")
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~atomic.UMASK
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~atomic.UMASK
    assert atomic.UMASK == os.umask(atomic.UMASK)  # read without changing it
