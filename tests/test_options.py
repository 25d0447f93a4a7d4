"""One home for option semantics: the values' policies, and a walk over every command's parameters."""

from __future__ import annotations

import inspect
import re
import typing

import pytest
import typer
from typer.main import get_command

from bracli import options
from bracli.cli import app
from bracli.errors import UsageError

SHARED = {name: alias for name, alias in vars(options).items()
          if typing.get_origin(alias) is typing.Annotated
          and any(isinstance(meta, typer.models.OptionInfo) for meta in typing.get_args(alias)[1:])}


def _click_param(alias):
    """The parameter typer builds from one of options.py's declarations."""
    def command(**_): ...

    command.__signature__ = inspect.Signature([inspect.Parameter("value", inspect.Parameter.KEYWORD_ONLY,
                                                                  default=None, annotation=alias)])
    command.__annotations__ = {"value": alias}
    throwaway = typer.Typer()
    throwaway.command()(command)
    return get_command(throwaway).params[0]


def _meaning(param) -> tuple:
    """Everything a user sees of an option but its default: flags, help, kind of value, range."""
    return (tuple(param.opts), tuple(param.secondary_opts), param.help, param.is_flag, param.multiple,
            getattr(param, "min", None), getattr(param, "max", None), param.type_descriptor.annotation)


REFERENCE = {name: _click_param(alias) for name, alias in SHARED.items()}
FLAGS = {flag: [name for name, p in REFERENCE.items() if flag in (*p.opts, *p.secondary_opts)]
         for p in REFERENCE.values() for flag in (*p.opts, *p.secondary_opts)}


def _commands():
    def walk(command, path):
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                yield from walk(child, [*path, name])
        else:
            yield " ".join(path), command

    return list(walk(get_command(app), []))


COMMANDS = _commands()


def test_the_walk_sees_every_command():
    names = {name for name, _ in COMMANDS}
    assert {"init", "train", "val", "predict", "export", "profile", "demo", "dataset check",
            "dataset sample"} <= names


@pytest.mark.parametrize(("name", "command"), COMMANDS, ids=[name for name, _ in COMMANDS])
def test_shared_options_are_declared_in_one_place(name, command):
    """A command may use a shared flag (or its short form) only through options.py, with the same meaning,
    and with the one default — or a difference written down, with its reason, in options.COMMAND_DEFAULTS."""
    for param in command.params:
        flags = [f for f in (*param.opts, *param.secondary_opts) if f in FLAGS]
        if not flags:
            continue
        candidates = {REFERENCE[n] for f in flags for n in FLAGS[f]}
        assert any(_meaning(param) == _meaning(ref) for ref in candidates), (
            f"bra {name}: {param.opts} is declared on its own; use bracli.options")
        key = param.opts[0].lstrip("-").replace("-", "_")
        expected = options.COMMAND_DEFAULTS.get((name, key), (options.DEFAULTS.get(key, param.default),))[0]
        got = param.default
        if param.multiple and got is not None and expected is not None:
            expected = [str(expected)]
        assert got == expected, f"bra {name} {param.opts[0]}: default {got!r}, the house default is {expected!r}"


def test_command_defaults_name_real_commands_and_options():
    names = {name for name, _ in COMMANDS}
    for (command, key), (_, reason) in options.COMMAND_DEFAULTS.items():
        assert command in names and key in options.DEFAULTS and reason


@pytest.mark.parametrize(("value", "expected", "notices"), [(640, 640, 0), (100, 128, 1), (32, 32, 0)])
def test_imgsz_rounds_up_and_says_so(value, expected, notices):
    said = []
    assert options.imgsz(value, notice=said.append) == expected
    assert len(said) == notices


@pytest.mark.parametrize("value", [0, 31, -640, 100_000, True])
def test_imgsz_out_of_range_is_a_usage_error(value):
    with pytest.raises(UsageError):
        options.imgsz(value)


def test_imgsz_sizes():
    said = []
    assert options.imgsz_sizes(["320,640", "480x640", "640", "100x100"], notice=said.append) == [
        (320, 320), (640, 640), (480, 640), (128, 128)]
    assert len(said) == 1
    with pytest.raises(UsageError):
        options.imgsz_sizes(["640px"])


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("cpu", "cpu"), ("CPU", "cpu"), ("0", "0"), ("0,1", "0,1"), ("cuda", "0"), ("cuda:1", "1"),
    ("mps", "mps"), (" 0, 1 ", "0,1")])
def test_device_spellings(value, expected):
    assert options.device(value) == expected


@pytest.mark.parametrize("value", ["tpu", "cuda:x", "0,0", "-1", "gpu0"])
def test_device_that_is_not_one(value):
    with pytest.raises(UsageError):
        options.device(value)


def test_device_message_names_what_was_typed(bra, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this message is about a machine without CUDA
    for typed in ("cuda:0", "0", "CUDA"):
        r = bra("profile", "--imgsz", "64", "--no-latency", "--no-memory", "--device", typed)
        assert r.code == 1
        assert "--device cuda:0: torch sees no CUDA GPU" in r.err


@pytest.mark.parametrize(("values", "message"), [
    ({"n_win": 65}, "--n-win 65 is too large: at most 64 (BiFormer uses 7 to 16)"),
    ({"topk": 5000}, "--topk 5000 is too large: at most 4096"),
    ({"heads": 2048}, "--heads 2048 is too large: at most 1024"),
    ({"qk_dim": 10**6}, "--qk-dim 1000000 is too large: at most 8192"),
    ({"side_dwconv": 33}, "--side-dwconv 33 is too large: at most 31"),
    ({"region_size": "1025"}, "--region-size 1025 is too large: at most 1024"),
])
def test_bra_options_have_upper_bounds(values, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        options.bra_options(**values)
    at_bound = {key: str(options.BRA_BOUNDS[key]) if key == "region_size" else options.BRA_BOUNDS[key]
                for key in values}
    assert options.bra_options(**at_bound) == at_bound


@pytest.mark.parametrize("name", ["plot.txt", "plot", "plot.PNG.jpg"])
def test_a_figure_is_named_png(tmp_path, name):
    with pytest.raises(UsageError, match=re.escape("name the file *.png")):
        options.check_png(tmp_path / name)
    options.check_png(tmp_path / "plot.PNG")


def test_extras_point_to_their_option():
    assert options.parse_extras(["lr0=0.005", "mosaic=0"]) == {"lr0": "0.005", "mosaic": "0"}
    with pytest.raises(UsageError, match=r"use --conf 0\.001"):
        options.parse_extras(["conf=0.001"], {"conf": "--conf"})
    with pytest.raises(UsageError, match="first argument"):
        options.parse_extras(["data=x.yaml"])
    with pytest.raises(UsageError, match="key=value"):
        options.parse_extras(["mosaic"])
    with pytest.raises(UsageError, match="twice"):
        options.parse_extras(["lr0=1", "lr0=2"])


def test_trust_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.delenv(options.TRUST_ENV, raising=False)
    assert not options.trust_checkpoints(False) and options.trust_checkpoints(True)
    monkeypatch.setenv(options.TRUST_ENV, "1")
    assert options.trust_checkpoints(False)


@pytest.mark.parametrize("value", ["../../escaped", "a/b", "..", ".", "", "a\\b", "/abs"])
def test_a_run_name_is_one_folder(value):
    with pytest.raises(UsageError, match="is not a folder name"):
        options.run_name(value)


@pytest.mark.parametrize("value", [None, "exp", "exp-2", "..exp", "a.b"])
def test_plain_run_names_pass(value):
    assert options.run_name(value) == value


@pytest.mark.parametrize("command", [["train"], ["ablate"]])
def test_commands_refuse_a_name_that_leaves_the_project(bra, tmp_path, command):
    r = bra(*command, "--project", tmp_path / "runs", "--name", "../../escaped")
    assert r.code == 2
    assert "is not a folder name" in r.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["train"], ["ablate"], ["val", "missing.pt"], ["predict", "missing.pt"]])
def test_a_project_that_is_a_file_is_refused_up_front(bra, tmp_path, command):
    projfile = tmp_path / "projfile"
    projfile.write_text("")
    r = bra(*command, "--project", projfile)
    assert r.code == 2
    assert "is a file, not a folder" in r.err
