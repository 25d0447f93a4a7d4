"""`bra ablate`'s engine: an interrupted variant resumes, a failing one is recorded while the others go on, and the
parallel path (one process per device) runs on the CPU with its devices mapped to `cpu`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bracli import templates
from bracli.ablation import plan
from bracli.engine import ablate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    from bracli.dataset.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("ablate-data") / "data", seed=3, n_train=8, n_val=4, imgsz=64)


@pytest.fixture(scope="module")
def nano_weights(tmp_path_factory):
    """An untrained scale-n checkpoint: every variant starts from it, so a scale-s variant cannot use it."""
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("weights")
    cfg = folder / templates.model_filename("n", [])
    cfg.write_text(templates.to_yaml(templates.render("n", []), "plain"))
    weights = folder / "yolov8n-untrained.pt"
    YOLO(str(cfg)).save(weights)
    return weights


def settings(data, epochs: int, weights=None) -> plan.Settings:
    return plan.Settings(data=str(data), epochs=epochs, imgsz=64, batch=4, seed=0,
                         weights=str(weights) if weights else None, extras={"plots": "False"})


def test_interrupted_variant_resumes_and_a_failed_one_does_not_stop_the_others(small_data, nano_weights, tmp_path,
                                                                                 monkeypatch):
    folder = tmp_path / "abl"
    failing, resumable = plan.expand(["none"], scales=["s"])[0], plan.expand(["p3"])[0]
    chosen = settings(small_data, epochs=2, weights=nano_weights)
    real_train = ablate.training.train

    def ctrl_c_after_first_epoch(*args, **kwargs):
        """Ctrl-C right after the first epoch was saved (after the engine's own callback for that moment)."""
        previous = kwargs["callbacks"].get("on_model_save")

        def stop(trainer) -> None:
            if previous is not None:
                previous(trainer)
            if trainer.epoch == 0:
                raise KeyboardInterrupt

        kwargs["callbacks"] = {**kwargs["callbacks"], "on_model_save": stop}
        return real_train(*args, **kwargs)

    def fail(*args, **kwargs):
        (Path(kwargs["project"]) / kwargs["name"] / "weights").mkdir(parents=True)  # as training starts
        raise RuntimeError("this variant cannot train\nsecond line")

    monkeypatch.setattr(ablate.training, "train", lambda *a, **k: (fail if k.get("name") == failing.slug
                                                                   else ctrl_c_after_first_epoch)(*a, **k))
    with pytest.raises(ablate.AblationInterrupted, match="run the same command again"):
        ablate.run_ablation(folder, [failing, resumable], chosen, devices=["cpu"], workers=0)
    first = {v.slug: json.loads((folder / v.slug / "variant.json").read_text()) for v in (failing, resumable)}
    assert first[failing.slug]["status"] == "failed"
    assert first[failing.slug]["error"] == "RuntimeError: this variant cannot train — second line"
    assert not (folder / failing.slug / "weights").exists()  # the record and log stay, no empty folder
    assert first[resumable.slug]["status"] == "interrupted" and first[resumable.slug]["epoch"] == 1
    assert (folder / resumable.slug / "weights" / "last.pt").is_file()

    monkeypatch.undo()
    report = ablate.run_ablation(folder, [failing, resumable], chosen, devices=["cpu"], workers=0)
    rows = {row.slug: row for row in report.rows}
    assert rows[resumable.slug].action == "resumed" and rows[resumable.slug].status == "done"
    assert rows[resumable.slug].epoch == 2 and rows[resumable.slug].latency_ms > 0
    epochs = (folder / resumable.slug / "results.csv").read_text().strip().splitlines()[1:]
    assert len(epochs) == 2  # epoch 1 from the first run, epoch 2 resumed; nothing trained twice
    assert rows[failing.slug].status == "failed" and "scale" in rows[failing.slug].error  # tried again, for real
    assert [row.slug for row in report.failed] == [failing.slug]


def test_variants_run_in_parallel_processes_one_per_device(small_data, nano_weights, tmp_path):
    """Devices 0 and 1 mapped to the CPU: each variant trains in its own process; one fails (scale-s variant with
    scale-n weights), which is recorded with its cause while the other finishes."""
    folder = tmp_path / "abl"
    variants = [plan.expand(["p3"], scales=["s"])[0], plan.expand(["p3"])[0]]
    seen: list[tuple[str, str]] = []
    report = ablate.run_ablation(folder, variants, settings(small_data, 1, nano_weights), devices=["0", "1"],
                                 workers=0, progress=lambda record: seen.append((record["slug"], record["status"])),
                                 worker_device=lambda device: "cpu")
    rows = {row.slug: row for row in report.rows}
    assert rows["yolov8n-bra-p3"].status == "done" and rows["yolov8n-bra-p3"].action == "trained"
    assert rows["yolov8n-bra-p3"].latency["method"] == "alone"
    assert rows["yolov8s-bra-p3"].status == "failed"
    assert "is scale 'n' but the model is scale 's'" in rows["yolov8s-bra-p3"].error
    assert ("yolov8n-bra-p3", "training") in seen and ("yolov8n-bra-p3", "done") in seen  # polled from its record
    log = (folder / "yolov8n-bra-p3" / "train.log").read_text()
    assert "transferred" in log or "Transferred" in log or "Epoch" in log
