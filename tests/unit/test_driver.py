"""run.driver: the run's checks before it starts, and a run folder's snapshot read by a newer vipo."""

import pytest
import yaml

from vipo.config import RunConfig, TrainConfig, to_dict
from vipo.errors import UserError
from vipo.run import driver


def test_run_checks_and_old_snapshots(tmp_path):
    with pytest.raises(UserError, match="train.real_videos: the world family draws its real videos from its renderer"):
        driver.check(RunConfig(train=TrainConfig(real_videos=str(tmp_path))))
    with pytest.raises(UserError, match="nothing: real videos not found"):
        driver.check(RunConfig(model="x", train=TrainConfig(real_videos=str(tmp_path / "nothing"))))
    old = to_dict(RunConfig())  # a run folder started before the memory options existed resumes unchanged
    del old["train"]["finetune"], old["generate"]["vae_tiling"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    driver.snapshot(RunConfig(), tmp_path)
    with pytest.raises(UserError, match="train.finetune: 'lora' then, 'full' now"):
        driver.snapshot(RunConfig(train=TrainConfig(finetune="full")), tmp_path)
