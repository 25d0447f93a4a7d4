"""What `bra profile` measures: models resolved, compared with vanilla, reported and plotted."""

from __future__ import annotations

import json

import pytest
import torch

from bracli import templates
from bracli.engine import cost, models
from bracli.errors import UsageError
from bracli.measure.report import CostReport, ModelCost


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> CostReport:
    """One full profile (all figures, vanilla comparison) of a rendered YAML at two small sizes."""
    rendered = templates.render("n", ["p3"])
    path = tmp_path_factory.mktemp("model") / templates.model_filename("n", ["p3"])
    path.write_text(templates.to_yaml(rendered, templates.default_header(rendered)))
    return cost.measure_cost(path, imgsz=[64, (64, 96)], runs=2, warmup=0)


def test_profile_of_a_yaml_against_vanilla(profiled):
    model, baseline = profiled.model, profiled.baseline
    assert model.name == "yolov8n-bra-p3" and baseline.name == "yolov8n"
    assert model.bra_placements == {16: "p3"} and model.bra_n_win == {16: 10} and model.bra_region_size == {16: 8}
    built = models.build(templates.render("n", ["p3"]))
    assert model.params == sum(p.numel() for p in built.parameters())
    assert model.bra_params == {16: sum(p.numel() for p in built.model[16].parameters())}
    assert [s.imgsz for s in model.sizes] == [(64, 64), (64, 96)]
    for mine, base, ratio in zip(model.sizes, baseline.sizes, profiled.ratios(), strict=True):
        assert mine.flops.total_gflops > base.flops.total_gflops
        assert mine.flops.total_gflops - base.flops.total_gflops == pytest.approx(mine.flops.bra_gflops, rel=0.02)
        assert ratio["gflops"] == pytest.approx(mine.flops.total_gflops / base.flops.total_gflops)
        assert ratio["params"] == pytest.approx(model.params / baseline.params)
        assert ratio["latency"] == pytest.approx(mine.latency.median_ms / base.latency.median_ms)
        assert ratio["train_memory"] == pytest.approx(mine.memory.train_bytes / base.memory.train_bytes)
        assert mine.ultralytics_gflops > 0 and mine.memory.forward_bytes > 0
    assert json.loads(json.dumps(profiled.to_dict()))["model"]["sizes"][1]["imgsz"] == [64, 96]



def test_plot(profiled, tmp_path):
    from bracli.errors import OutputExistsError
    from bracli.measure.plot import plot_cost

    path = plot_cost(profiled, tmp_path / "cost.png")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(OutputExistsError):
        plot_cost(profiled, path)
    one_size = CostReport(model=ModelCost("m", "n", 1, {}, {}, {}, profiled.model.sizes[:1]),
                            baseline=None, device="cpu", batch=1, cpu_threads=1)
    with pytest.raises(UsageError, match="two --imgsz"):
        plot_cost(one_size, tmp_path / "one.png")


def test_profile_of_a_checkpoint(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"model": models.build(templates.render("s", ["p4"]))}, path)
    result = cost.measure_cost(path, imgsz=[64], latency=False, memory=False)
    assert result.model.name == "best.pt" and result.baseline.name == "yolov8s"
    assert set(result.model.sizes[0].flops.bra_layers) == set(result.model.bra_params) == {19}
    assert result.model.sizes[0].latency is None and result.model.sizes[0].memory is None


def test_measure_options_are_checked():
    notices = []
    report = cost.measure_cost(None, imgsz=[100], latency=False, memory=False, compare=False, notice=notices.append)
    assert report.model.sizes[0].imgsz == (128, 128)  # rounded up to the stride, with a notice
    assert notices == ["--imgsz 100 is not a multiple of the stride 32; using 128"]
    with pytest.raises(UsageError, match="not both"):
        cost.resolve_model("x.yaml", bra_after=["p3"])
    with pytest.raises(UsageError, match="unknown placement"):
        cost.resolve_model(None, bra_after=["p9"])
    with pytest.raises(UsageError, match="neither"):
        cost.resolve_model("weights.onnx")
    assert cost.resolve_model(templates.render("n", ["p3", "p5"]))[1] == "yolov8n-bra-p3-p5"


def test_no_comparison_without_a_scale():
    model = models.build(templates.render("s", ["p4"]))
    assert cost.vanilla_for(model)[1] == "yolov8s"
    del model.yaml["scale"]
    assert cost.vanilla_for(model) is None



def test_cpu_latency_uses_the_threads_of_ultralytics_predictor_and_restores_the_callers():
    """ultralytics' select_device gives CPU prediction min(8, cores - 1) torch threads; the profile times
    with the same, whatever count the calling process had, and gives the caller's count back."""
    from ultralytics.utils import NUM_THREADS

    before = torch.get_num_threads()
    caller = NUM_THREADS + 1
    torch.set_num_threads(caller)
    try:
        report = cost.measure_cost(None, imgsz=[64], gflops=False, memory=False, compare=False, runs=1, warmup=0,
                                   device="cpu")
        assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(before)
    assert report.cpu_threads == NUM_THREADS and report.model.sizes[0].latency.cpu_threads == NUM_THREADS
