"""The expensive fixture of the end-to-end tests: one trained (interrupted, then resumed) run."""

from __future__ import annotations

import pytest

# ~190 optimizer steps: measured to lift mAP50 clearly above an untrained model's 0 on the tiny dataset.
# warmup_epochs=0 because ultralytics warms up for at least 100 steps; val=False validates the last epoch only.
TRAIN = {"epochs": 16, "imgsz": 128, "batch": 4, "workers": 0,
         "extras": {"warmup_epochs": 0, "val": False, "plots": False}}


class Interrupted(Exception):
    """Raised from a training callback to stop a run the way a crash or Ctrl-C would."""


@pytest.fixture(scope="session")
def train_options() -> dict:
    return TRAIN


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tiny_data):
    """A run interrupted after its first epoch, then resumed to the end: (first attempt's dir, final result)."""
    from bracli.engine import train

    project = tmp_path_factory.mktemp("runs")

    def stop_after_first_epoch(trainer) -> None:
        if trainer.epoch == 0:
            raise Interrupted

    with pytest.raises(Interrupted):
        train.train(tiny_data, train.ModelChoice(), project=project, name="e2e",
                        callbacks={"on_model_save": stop_after_first_epoch}, **TRAIN)
    last = project / "e2e" / "weights" / "last.pt"
    assert last.is_file()
    result = train.train(resume=last, project=project)
    return project / "e2e", result
