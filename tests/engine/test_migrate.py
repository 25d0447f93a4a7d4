"""Blog-trained checkpoints → bracli: same outputs, everything else kept, and nothing in the file ever runs."""

from __future__ import annotations

import importlib
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import bracli
from bracli.engine import legacy, migrate
from bracli.errors import BracliError, UsageError
from tests.legacy_bra import BLOG_MODULE, legacy_detector, load_as_blog, save_like_ultralytics

# P3 maps: 80×80 and 40×60 are not multiples of n_win 7 (the attention pads), 56×56 is
SIZES = [(640, 640), (320, 480), (448, 448)]
TOLERANCE = 1e-4  # max |patched - migrated| relative to the largest |output|


def blog_module_has_legacy_classes() -> bool:
    return hasattr(importlib.import_module(BLOG_MODULE), "BiLevelRoutingAttention")


@pytest.fixture(scope="module")
def legacy_ckpt(tmp_path_factory) -> Path:
    path = save_like_ultralytics(legacy_detector(), tmp_path_factory.mktemp("blog") / "best.pt")
    assert not blog_module_has_legacy_classes()
    return path


@pytest.fixture(scope="module")
def migrated(legacy_ckpt):
    out = legacy_ckpt.parent / "best-bracli.pt"
    return migrate.migrate(legacy_ckpt, out)


def flat_outputs(output) -> list[torch.Tensor]:
    """Every tensor of a detector's eval output (decoded predictions, then the raw per-level tensors)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in sorted(output) for t in flat_outputs(output[key])]
    return [t for item in output for t in flat_outputs(item)]


def test_plain_ultralytics_cannot_read_the_legacy_checkpoint(legacy_ckpt):
    with pytest.raises(AttributeError, match="Can't get attribute 'BiLevelRoutingAttention'"):
        torch.load(legacy_ckpt, map_location="cpu", weights_only=False)


def test_summary_names_the_layer(migrated):
    assert migrated.summary() == "migrated 1 BRA layer (index 16: dim 64, n_win 7, heads 8, topk 4)"
    assert migrated.layers[0].pickled_as == f"{BLOG_MODULE}.BiLevelRoutingAttention"
    assert migrated.layers[0].found_in == ["ema"]
    assert migrated.yaml_rows == [16]


def test_same_outputs_in_a_fresh_process_with_plain_yolo(legacy_ckpt, migrated, tmp_path):
    """YOLO('OUT.pt') in a new process that never imports bracli itself, against the patched model."""
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.rand(1, 3, *size, generator=generator) for size in SIZES]
    torch.save(inputs, tmp_path / "inputs.pt")
    code = textwrap.dedent(f"""
        import torch
        from ultralytics import YOLO
        model = YOLO({str(migrated.out)!r}).model.float().eval()
        assert type(model.model[16]).__module__ == "bracli.nn.bra", type(model.model[16])
        inputs = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            torch.save([model(x) for x in inputs], {str(tmp_path / "outputs.pt")!r})
    """)
    env = {**{k: v for k, v in os.environ.items() if k != "ULTRALYTICS_SAFE_LOAD"},  # ultralytics' default loading
           "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path), "PYTHONPATH": str(Path(bracli.__file__).parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = torch.load(tmp_path / "outputs.pt", weights_only=False)

    patched = load_as_blog(legacy_ckpt)["ema"].float().eval()
    for x, output in zip(inputs, got, strict=True):
        with torch.no_grad():
            expected = flat_outputs(patched(x))
        actual = flat_outputs(output)
        assert len(actual) == len(expected) > 1
        for a, e in zip(actual, expected, strict=True):
            assert a.shape == e.shape
            assert float((a - e).abs().max()) <= TOLERANCE * float(e.abs().max()), x.shape


def test_everything_else_is_kept(legacy_ckpt, migrated):
    before = load_as_blog(legacy_ckpt)
    after = torch.load(migrated.out, map_location="cpu", weights_only=False)
    assert list(after) == list(before) == migrated.kept
    for key in ("epoch", "best_fitness", "updates", "train_args", "train_metrics", "train_results", "date",
                "version", "license", "model"):
        assert after[key] == before[key], key
    assert after["optimizer"]["param_groups"] == before["optimizer"]["param_groups"]
    old, new = before["ema"].state_dict(), after["ema"].state_dict()
    assert sorted(new) == sorted(old)  # the legacy layer registers lepe before qkv; the set is the same
    assert all(torch.equal(new[k], old[k]) and new[k].dtype == old[k].dtype for k in old)
    layer = after["ema"].model[16]
    assert (layer.i, layer.f, layer.type) == (16, -1, "bracli.nn.bra.BiLevelRoutingAttention")


def test_stored_yaml_rebuilds_the_same_model(migrated):
    """Fine-tuning and resuming rebuild the model from its stored YAML: it must now be bracli's dialect."""
    from ultralytics.nn.tasks import DetectionModel

    ema = torch.load(migrated.out, map_location="cpu", weights_only=False)["ema"]
    spec = ema.yaml
    assert spec["head"][6] == [-1, 1, "BiLevelRoutingAttention", [64, 7, 8, 4, 64, 3]]
    assert spec["bra"]["migrated"] and spec["bra"]["layers"][0]["channels"] == 64
    rebuilt = DetectionModel(spec, verbose=False)
    rebuilt.load_state_dict(ema.float().state_dict())  # strict: same layers, same shapes


def test_legacy_predicate(legacy_ckpt, migrated):
    needed = torch.serialization.get_unsafe_globals_in_checkpoint(legacy_ckpt)
    found = legacy.legacy_bra_globals(needed)
    assert set(found) == {f"{BLOG_MODULE}.{name}" for name in legacy.LEGACY_CLASSES}
    assert "bra migrate" in legacy.legacy_checkpoint_message(legacy_ckpt, needed)
    converted = torch.serialization.get_unsafe_globals_in_checkpoint(migrated.out)
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in torch.serialization.get_safe_globals()
               if isinstance(g, type)}
    assert "bracli.nn.bra.QKVLinear" in set(converted) | allowed  # bracli's classes, allowed once registered
    assert legacy.legacy_bra_globals(converted) == []
    assert legacy.legacy_checkpoint_message(migrated.out, converted) is None


def test_no_allow_list_entry_outlives_the_read(legacy_ckpt, tmp_path):
    """The legacy aliases and stand-ins are scoped to migrate's read; what stays registered afterwards is only
    what ultralytics' own restricted loader registers for good (its model classes, when the result is verified)."""
    before = list(torch.serialization.get_safe_globals())
    migrate.migrate(legacy_ckpt, tmp_path / "again.pt")
    added = [entry for entry in torch.serialization.get_safe_globals() if entry not in before]
    assert not [entry for entry in added if isinstance(entry, tuple)]  # no alias of a legacy class name
    assert all(entry.__module__.startswith(("ultralytics.", "torch.")) for entry in added), added
    with pytest.raises(pickle.UnpicklingError):
        torch.load(legacy_ckpt, map_location="cpu", weights_only=True)


@pytest.mark.parametrize(("options", "named"), [
    ({"soft_routing": True}, "soft_routing=True"),
    ({"kv_downsample_mode": "avgpool", "kv_downsample_ratio": 2}, "kv_downsample_mode='avgpool'"),
    ({"param_attention": "qkv"}, "param_attention='qkv'"),
    ({"qk_scale": 0.5}, "qk_scale=0.5"),
    ({"param_routing": True, "diff_routing": True}, "param_routing=True"),
])
def test_settings_bracli_does_not_implement(tmp_path, options, named):
    source = save_like_ultralytics(legacy_detector(**options), tmp_path / "odd.pt")
    with pytest.raises(UsageError) as caught:
        migrate.migrate(source, tmp_path / "out.pt")
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    assert "layer 16" in str(caught.value) and named in str(caught.value)
    assert not (tmp_path / "out.pt").exists()


class Hostile:
    """Unpickling it runs ``call(*args)``: what a crafted checkpoint does."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def hostile_model_cfg(marker: Path) -> dict:
    """A model dict whose activation ultralytics' constructor would eval, writing ``marker``."""
    from bracli import templates

    spec = templates.render("n", [])
    spec["activation"] = f"(open({str(marker)!r}, 'w').write('ran'), nn.SiLU())[1]"
    return spec


@pytest.mark.parametrize("payload", ["exec", "model-constructor"])
def test_hostile_checkpoint_runs_nothing(tmp_path, payload, monkeypatch):
    from ultralytics.nn.tasks import DetectionModel

    marker = tmp_path / "marker"
    if payload == "exec":
        hostile = Hostile(exec, f"open({str(marker)!r}, 'w').write('ran')")
    else:  # an allowed class, called with arguments of the attacker's choosing
        hostile = Hostile(DetectionModel, hostile_model_cfg(marker))
    source = tmp_path / "hostile.pt"
    torch.save({"ema": hostile, "epoch": 1}, source)

    with pytest.raises(BracliError) as caught:
        migrate.migrate(source, tmp_path / "out.pt")
    assert "\n" not in str(caught.value) and caught.value.exit_code == 1
    # a model class called with the attacker's arguments is refused by bracli's allow-list, or — when ultralytics'
    # own restricted loading already allowed the class in this process — its payload is blocked while building
    expected = ["builtins.exec"] if payload == "exec" else ["built by calling it", "blocked during restricted"]
    assert any(words in str(caught.value) for words in expected), str(caught.value)
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()

    # the file is truly hostile: a full read runs it (with ultralytics' own default, unrestricted model building)
    monkeypatch.setattr("ultralytics.nn.tasks.SAFE_LOAD", False)
    torch.load(source, map_location="cpu", weights_only=False)
    assert marker.read_text() == "ran"


def test_global_outside_the_allow_list_is_named(tmp_path):
    import datetime

    source = save_like_ultralytics(legacy_detector(), tmp_path / "dated.pt", date=datetime.date(2026, 11, 29))
    with pytest.raises(BracliError) as caught:
        migrate.migrate(source, tmp_path / "out.pt")
    assert caught.value.exit_code == 1 and "datetime.date" in str(caught.value)


def test_not_a_checkpoint(tmp_path):
    source = tmp_path / "image.pt"
    source.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(BracliError, match=r"not a readable torch\.save checkpoint"):
        migrate.migrate(source, tmp_path / "out.pt")


def test_checkpoint_without_legacy_layers(migrated, tmp_path):
    with pytest.raises(BracliError, match="holds no legacy BRA layer"):
        migrate.migrate(migrated.out, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_restricted_reader_for_other_commands(legacy_ckpt, migrated):
    """What bra val/predict/export/train --weights can use: legacy files get the migrate hint, others load."""
    with pytest.raises(BracliError, match=r"trained with a patched ultralytics.*bra migrate"):
        migrate.read_restricted(legacy_ckpt)
    ckpt = migrate.read_restricted(migrated.out)
    full = torch.load(migrated.out, map_location="cpu", weights_only=False)
    assert type(ckpt["ema"]) is type(full["ema"])
    restored, expected = ckpt["ema"].state_dict(), full["ema"].state_dict()
    assert all(torch.equal(restored[k], expected[k]) for k in expected)
    assert ckpt["train_args"] == full["train_args"]
