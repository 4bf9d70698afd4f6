import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random world model saved in the diffusers layout (no downloads, ~0.2M parameters)."""
    from vipo.models.world import WorldModel

    path = tmp_path_factory.mktemp("tiny") / "model"
    WorldModel.fresh(widths=(16, 32, 32), text_width=32, seed=0).save(path)
    return path


TINY_RUN = [
    "--set", "prompts.per_round=3", "--set", "generate.samples_per_prompt=3", "--set", "generate.num_steps=2",
    "--set", "eval.clips_per_split=3", "--set", "eval.num_steps=2", "--set", "train.epochs=2",
    "--set", "train.batch_size=2", "--set", "train.grad_accum=1", "--set", "train.real_batch_size=2",
    "--set", "train.save_every=1", "--set", "train.log_every=1", "--quiet",
]


@pytest.fixture(scope="session")
def tiny_family_dir(tmp_path_factory):
    """``tiny_family_dir(family)``: a tiny random diffusers pipeline of a real family, saved once per session."""
    import tiny_families

    made = {}

    def make(family: str):
        if family not in made:
            made[family] = tiny_families.save(family, tmp_path_factory.mktemp(family) / "model")
        return made[family]

    return make
