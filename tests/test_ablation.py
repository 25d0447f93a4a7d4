"""`bra ablate`'s pure half: variants from the axes, folder records, the table's deltas, the device scheduler."""

from __future__ import annotations

import threading
import time

import pytest

from bracli.ablation import plan
from bracli.ablation.report import build, read_report
from bracli.errors import UsageError


def slugs(variants):
    return [v.slug for v in variants]


def test_each_bra_after_value_is_one_variant_and_a_comma_list_is_one_model():
    variants = plan.expand(["none", "p3", "p3,p4,p5"])
    assert slugs(variants) == ["yolov8n", "yolov8n-bra-p3", "yolov8n-bra-p3-p4-p5"]
    assert variants[2].placements == ("p3", "p4", "p5")
    assert variants[0].bra == () and dict(variants[1].bra)["topk"] == 4


def test_default_variants_are_the_plain_model_and_p3():
    assert slugs(plan.expand()) == ["yolov8n", "yolov8n-bra-p3"]


def test_axes_multiply_and_the_plain_model_is_not_repeated_per_bra_option():
    variants = plan.expand(["none", "p3"], scales=["n", "s"], topk=[2, 4])
    assert slugs(variants) == ["yolov8n", "yolov8n-bra-p3-topk2", "yolov8n-bra-p3",
                               "yolov8s", "yolov8s-bra-p3-topk2", "yolov8s-bra-p3"]


def test_families_and_tasks_are_axes():
    variants = plan.expand(["psa"], families=["yolo11", "yolo26"], tasks=["detect", "segment"])
    assert slugs(variants) == ["yolo11n-bra-psa", "yolo11n-seg-bra-psa", "yolo26n-bra-psa", "yolo26n-seg-bra-psa"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bra_after": ["p3", "p3"]}, "given twice"),
    ({"bra_after": ["p3,p4", "p4,p3"]}, "given twice"),
    ({"bra_after": ["p3"], "topk": [4, 4]}, "--topk 4 is given twice"),
    ({"bra_after": ["p3"], "scales": ["n", "N"]}, "--scale n is given twice"),
    ({"bra_after": ["p3", "p9"]}, "unknown placement 'p9'"),
    ({"bra_after": ["psa"]}, "has no placement 'psa'"),
    ({"bra_after": ["none,p3"]}, "cannot be combined"),
    ({"bra_after": ["p3"], "heads": [3]}, "heads"),
    ({"bra_after": ["p3"], "families": ["yolov9"]}, "yolov9"),
])
def test_bad_variants_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        plan.expand(**kwargs)


def test_slug_names_only_options_that_differ_from_the_default():
    default, = plan.expand(["p3"], topk=[4], n_win=[10])
    other, = plan.expand(["p3"], topk=[8], n_win=[4], side_dwconv=5, region_size="none")
    assert default.slug == "yolov8n-bra-p3"
    assert other.slug == "yolov8n-bra-p3-nwin4-topk8-dw5-regionnone"
    assert plan.Variant.from_dict(other.to_dict()) == other


def test_presets_are_an_axis_and_each_variant_renders_again_from_its_options():
    ours, blog = plan.expand(["p3"], presets=["bracli", "blog"])
    blog_topk, = plan.expand(["p3"], presets=["blog"], topk=[8])
    assert (ours.slug, blog.slug, blog_topk.slug) == ("yolov8n-bra-p3", "yolov8n-bra-p3-blog",
                                                      "yolov8n-bra-p3-blog-topk8")
    from bracli import templates
    for variant, (n_win, heads, region) in ((ours, (10, 2, 8)), (blog, (7, 8, None)), (blog_topk, (7, 8, None))):
        layer, = templates.render("n", ["p3"], **variant.bra_options)[templates.METADATA_KEY]["layers"]
        assert (layer["n_win"], layer["heads"], layer["region_size"]) == (n_win, heads, region), variant.slug


SETTINGS = plan.Settings(data="/data/data.yaml", epochs=3, imgsz=64, batch=4, seed=0, extras={"lr0": "0.01"})


def test_folder_records_and_a_rerun_with_other_settings_is_refused(tmp_path):
    folder = tmp_path / "abl"
    variants = plan.expand(["none", "p3"])
    plan.check_folder(folder, SETTINGS, variants)  # a new folder: fine
    plan.start_folder(folder, SETTINGS, variants)
    assert plan.read_json(folder / plan.ABLATION_FILE)["variants"] == slugs(variants)
    record = plan.read_json(folder / "yolov8n-bra-p3" / plan.VARIANT_FILE)
    assert record["status"] == "queued" and record["variant"] == variants[1].to_dict()

    plan.check_folder(folder, SETTINGS, variants)  # the same command again: fine
    more = plan.expand(["none", "p3", "p4"])
    plan.check_folder(folder, SETTINGS, more)  # one more variant with the same settings: fine
    plan.start_folder(folder, SETTINGS, more)
    assert plan.read_json(folder / plan.ABLATION_FILE)["variants"] == slugs(more)
    changed = plan.Settings(**{**SETTINGS.to_dict(), "epochs": 5})
    with pytest.raises(UsageError, match="epochs 3 → 5"):
        plan.check_folder(folder, changed, variants)


def test_a_folder_that_is_not_an_ablation_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an ablation folder"):
        plan.check_folder(tmp_path, SETTINGS, plan.expand())


def finished(variant, **values):
    record = plan.new_record(variant, SETTINGS)
    record.update(status="done", device="cpu", **values)
    return record


def test_deltas_are_against_the_plain_model_of_the_same_scale(tmp_path):
    n_plain, n_p3, s_plain, s_p3 = plan.expand(["none", "p3"], scales=["n", "s"])
    records = [finished(n_plain, metrics={"mAP50": 0.5, "mAP50-95": 0.3}, params=100, gflops=8.0, latency_ms=10.0),
               finished(n_p3, metrics={"mAP50": 0.55, "mAP50-95": 0.32}, params=110, gflops=8.8, latency_ms=15.0),
               finished(s_plain, metrics={"mAP50": 0.6, "mAP50-95": 0.4}, params=400, gflops=28.0, latency_ms=20.0),
               {**finished(s_p3), "status": "failed", "error": "out of memory"}]
    report = build(tmp_path, SETTINGS.to_dict(), records)
    rows = {row.slug: row for row in report.rows}
    assert rows["yolov8n-bra-p3"].baseline == "yolov8n"
    assert rows["yolov8n-bra-p3"].deltas["mAP50"] == pytest.approx(0.05)
    assert rows["yolov8n-bra-p3"].deltas["params"] == pytest.approx(0.10)
    assert rows["yolov8n-bra-p3"].deltas["latency_ms"] == pytest.approx(0.5)
    assert rows["yolov8n"].deltas == {} and rows["yolov8n"].baseline is None
    assert rows["yolov8s-bra-p3"].deltas == {} and [r.slug for r in report.failed] == ["yolov8s-bra-p3"]


def test_report_is_read_back_from_the_folders(tmp_path):
    variants = plan.expand(["none", "p3"])
    plan.start_folder(tmp_path, SETTINGS, variants)
    plan.write_json(tmp_path / "yolov8n" / plan.VARIANT_FILE, finished(variants[0], params=100))
    report = read_report(tmp_path)
    assert [(row.slug, row.status, row.params) for row in report.rows] == [("yolov8n", "done", 100),
                                                                           ("yolov8n-bra-p3", "queued", None)]
    assert report.settings == SETTINGS.to_dict()
    with pytest.raises(UsageError, match="does not exist"):
        read_report(tmp_path / "nowhere")


def test_scheduler_runs_one_item_per_device_at_a_time_and_uses_every_device():
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    lock = threading.Lock()

    def work(item: int, device: str) -> tuple[int, str]:
        with lock:
            running[device] = running.get(device, 0) + 1
            most[device] = max(most.get(device, 0), running[device])
        time.sleep(0.05)
        with lock:
            running[device] -= 1
        return item * 10, device

    results = plan.run_on_devices(list(range(6)), ["0", "1", "2"], work)
    assert [value for value, _ in results] == [0, 10, 20, 30, 40, 50]
    assert most == {"0": 1, "1": 1, "2": 1}


def test_scheduler_stops_handing_out_work_after_an_error():
    started = []

    def work(item: int, device: str) -> int:
        started.append(item)
        if item == 0:
            raise RuntimeError("boom")
        return item

    with pytest.raises(RuntimeError, match="boom"):
        plan.run_on_devices(list(range(5)), ["0"], work)
    assert started == [0]
