import os

import pytest

# fixtures that unit tests of several modules ask for (tests/ is on sys.path: the rootdir conftest)
from family_helpers import family, model  # noqa: F401
from train_helpers import tiny  # noqa: F401


def pytest_configure(config):
    """Under pytest-xdist the workers share the cores: each worker's torch (and every process it starts, through
    OMP_NUM_THREADS) gets its share, one thread on the reference machine's 2 cores with 2 workers. More threads than
    cores only spin: a tiny model's ops gain nothing from them, and one in-process KTO round measured 468 s of CPU
    with 2 threads per worker against 26 s with one on a busy 2-core machine."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(int(os.environ.setdefault("OMP_NUM_THREADS", str(share))))


#: the files that keep one worker busiest (seconds of test time in a fresh clone's `make test`, 2026-12-03), handed
#: out first (the Makefile turns xdist's own order, files with the most tests first, off) so that the short files fill
#: in around them instead of one of these running alone at the end
HEAVY_FIRST = (
    "tests/integration/test_launch.py",  # 230 s
    "tests/faults/test_fault_matrix.py",  # 140 s
    "tests/faults/test_safety.py",  # 100 s
    "tests/integration/test_cli_loop.py",  # 49 s
    "tests/unit/test_trainer.py",  # 36 s
    "tests/integration/test_annotate_browser.py",  # 28 s
    "tests/integration/test_critic_train_cli.py",  # 28 s
    "tests/integration/test_families_cli.py",  # 28 s
)


def pytest_collection_modifyitems(config, items):
    first = {path: k for k, path in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random world model saved in the diffusers layout (no downloads, ~0.2M parameters)."""
    from vipo.models.world import WorldModel

    path = tmp_path_factory.mktemp("tiny") / "model"
    WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0).save(path)
    return path


TINY_RUN = [
    "--set",
    "prompts.per_round=3",
    "--set",
    "generate.samples_per_prompt=3",
    "--set",
    "generate.num_steps=2",
    "--set",
    "eval.clips_per_split=3",
    "--set",
    "eval.num_steps=2",
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=2",
    "--set",
    "train.grad_accum=1",
    "--set",
    "train.real_batch_size=2",
    "--set",
    "train.save_every=1",
    "--set",
    "train.log_every=1",
    "--quiet",
]


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory):
    """``tiny_family_dir(family)``: a tiny random diffusers pipeline of a real family, saved once per session."""
    import tiny_families

    made = {}

    def make(name: str):
        if name not in made:
            made[name] = tiny_families.save(name, tmp_path_factory.mktemp(name) / "model")
        return made[name]

    return make


@pytest.fixture()
def wan(tiny_family_dir):
    """A fresh tiny Wan pipeline (test_trainer, test_cache, test_real)."""
    from vipo.models import load_model

    return load_model(str(tiny_family_dir("wan")))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir):
    """One tiny 1-round DPO run through the CLI, shared by the tests that only read its folder (it mirrors its
    metrics to TensorBoard, which test_tracking reads back)."""
    from vipo.cli import main

    out = tmp_path_factory.mktemp("tinyrun") / "run"
    assert (
        main(
            ["run", "--model", str(tiny_model_dir), "--out", str(out), "--rounds", "1", "--method", "dpo"]
            + TINY_RUN
            + ["--set", "train.tracker=tensorboard"]
        )
        == 0
    )
    return out


def _apt_install(packages: list[str], what: str) -> None:
    """apt-get install ``packages`` (an update first if the lists are stale); skips where apt-get cannot run."""
    import os
    import shutil
    import subprocess

    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip(
            f"{what} is not installed and apt-get cannot run here (not Debian, or not root): "
            f"`apt-get install -y {' '.join(packages)}` to run the browser tests"
        )
    import fcntl

    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    # pytest-xdist's workers may both get here: one installs while the other waits (dpkg takes one at a time)
    with open("/tmp/vipo-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(install, env=env, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            got = subprocess.run(install, env=env, capture_output=True, text=True)
            if got.returncode:
                pytest.skip(f"apt-get install {' '.join(packages)} failed: {got.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless chromium: installed with apt-get when missing (skips only where apt-get cannot run)."""
    import shutil

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        _apt_install(["chromium"], "chromium")
        exe = shutil.which("chromium")
    return exe


@pytest.fixture(scope="session")
def chromedriver(chromium):
    """Debian's chromedriver (package chromium-driver, the same version as its chromium) for selenium: installed
    with apt-get when missing, beside chromium."""
    import shutil

    exe = shutil.which("chromedriver")
    if exe is None:
        _apt_install(["chromium", "chromium-driver"], "chromedriver")
        exe = shutil.which("chromedriver")
    return exe
