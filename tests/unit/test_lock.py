"""Tests of vipo.io.lock."""

import pytest
from cli_helpers import _clips, one_line

from vipo.cli import main
from vipo.errors import UserError


def test_out_naming_an_existing_file_is_one_line(tmp_path, tiny_model_dir, capsys):
    root = _clips(tmp_path / "v")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    model = ["--model", str(tiny_model_dir)]
    for argv in (
        ["run", "--out", str(taken), *model],
        ["generate", "--out", str(taken), "--prompt", "x", *model],
        ["eval", str(root), "--out", str(taken)],
        ["world", "pretrain", "--out", str(taken)],
        ["ablate", "--out", str(taken), *model],
        ["critic", "eval", str(root), "--out", str(tmp_path)],
    ):
        assert main([*argv, "--quiet"]) == 2, argv
        err = one_line(capsys)
        assert str(taken if argv[0] != "critic" else tmp_path) in err, err
    assert taken.read_text() == "a file"
    assert main(["prompts", "build", "--out", str(tmp_path), "-n", "2"]) == 2  # any other verb: the OS's one line
    assert one_line(capsys) == f"vipo: error: {tmp_path}: Is a directory"
    # vipo judge's --out is a file: one vipo did not write is never overwritten without --force
    assert main(["judge", str(root), "--out", str(taken), "--quiet"]) == 2
    assert "was not written by vipo judge" in one_line(capsys) and taken.read_text() == "a file"
    assert main(["judge", str(root), "--out", str(taken), "--quiet", "--force"]) == 0
    assert '"critic": "world"' in taken.read_text()


def test_run_lock_refuses_a_second_holder_and_is_freed_by_its_exit(tmp_path):
    import subprocess
    import sys

    from vipo.io.lock import LOCK_NAME, folder_lock

    hold = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('held', flush=True); "
        "time.sleep(60)"
    )
    tmp_path.joinpath("run").mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path / "run" / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"run: in use by another vipo process \(pid {other.pid}\)"):
            with folder_lock(tmp_path / "run"):
                pass
    finally:
        other.kill()
        other.wait()
    with folder_lock(tmp_path / "run"), folder_lock(tmp_path / "run"):  # free again; re-entrant in one process
        assert (tmp_path / "run" / LOCK_NAME).read_text().strip() == str(__import__("os").getpid())
