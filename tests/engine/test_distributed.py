"""Training past one machine: the world torchrun describes, and two-node runs on this machine's CPU (gloo).

The slow tests start two torchrun agents on localhost (``--nnodes 2 --nproc-per-node 1``), each running the
command docs/train.md gives for a cluster, so rank 1 is a "second node": LOCAL_RANK 0, RANK 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

import bracli
from bracli.engine import distributed
from bracli.errors import BracliError, UsageError

TORCHRUN_ENV = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_WORLD_SIZE": "2"}


# ------------------------------------------------------------------------------------------------ the world


def test_world_outside_torchrun_is_one_process():
    assert distributed.world({}) == distributed.World()
    assert not distributed.world({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}).distributed


def test_world_from_torchrun():
    world = distributed.world(TORCHRUN_ENV)
    assert world == distributed.World(size=4, rank=3, local_rank=1, local_size=2, nodes=2)
    assert world.distributed and not world.main


@pytest.mark.parametrize(("env", "named"), [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE=abc is not a number"),
    ({"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"}, "RANK=x: each must be"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "LOCAL_RANK=(unset): each must be"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "two"}, "LOCAL_WORLD_SIZE=two"),
])
def test_a_malformed_torchrun_variable_is_named(env, named):
    with pytest.raises(UsageError, match=re.escape(named)):
        distributed.world(env)


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "x", "LOCAL_RANK": "0"},
                                 {"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}])
def test_inconsistent_environment_is_a_usage_error(env):
    with pytest.raises(UsageError, match="torchrun"):
        distributed.world(env)


@pytest.mark.parametrize("batch, size, advice", [(15, 2, "use --batch 14 or 16"), (1, 4, "use --batch 4"),
                                                 (10, 4, "use --batch 8 or 12")])
def test_batch_that_does_not_split(batch, size, advice):
    world = distributed.World(size=size)
    with pytest.raises(UsageError, match=advice):
        distributed.check_batch(batch, world)


def test_batch_that_splits_and_single_process_batches_pass():
    distributed.check_batch(16, distributed.World(size=4))
    distributed.check_batch(15, distributed.World())
    with pytest.raises(UsageError, match="automatic batch"):
        distributed.check_batch(-1, distributed.World(size=2))


@pytest.mark.parametrize("device, cuda, expected", [
    ("cpu", True, "cpu"),
    (None, False, "cpu"),
    (None, True, "1"),          # GPU LOCAL_RANK
    ("4,5", True, "5"),         # the LOCAL_RANK-th of one GPU per process
])
def test_local_device(device, cuda, expected):
    world = distributed.World(size=4, rank=3, local_rank=1, local_size=2)
    assert distributed.local_device(device, world, cuda) == expected


@pytest.mark.parametrize("device", ["0", "0,1,2", "mps"])
def test_local_device_refuses_what_does_not_fit(device):
    with pytest.raises(UsageError):
        distributed.local_device(device, distributed.World(size=4, rank=1, local_rank=1, local_size=2), True)


def test_backend_is_chosen_by_device():
    assert distributed.backend("cuda") == "nccl"
    assert distributed.backend("cpu") == "gloo"


def test_timeout_from_environment():
    assert distributed.timeout({}).total_seconds() == distributed.DEFAULT_TIMEOUT_S
    assert distributed.timeout({distributed.TIMEOUT_ENV: "90"}).total_seconds() == 90
    with pytest.raises(UsageError, match=distributed.TIMEOUT_ENV):
        distributed.timeout({distributed.TIMEOUT_ENV: "soon"})


# ------------------------------------------------------------------------------- agreeing at start-up


def _report(rank, host="a", version="1.0", failure=None, facts=None):
    return {"rank": rank, "host": host, "version": version, "failure": failure, "facts": facts or {}}


def test_ranks_that_agree():
    assert distributed.disagreement([_report(0), _report(1)]) == (None, 0)


def test_versions_differ():
    message, code = distributed.disagreement([_report(0), _report(1), _report(2, "b", "0.9"), _report(3, "b")])
    assert code == 1
    assert message == ("bracli differs across the nodes (1.0 on ranks 0-1, 3 (a, b); 0.9 on rank 2 (b)); "
                       "install the same version on every node")


def test_failure_on_one_rank_is_named_with_its_rank_and_code():
    message, code = distributed.disagreement([_report(0), _report(1, "b", failure=("data file not found: d", 1))])
    assert (message, code) == ("rank 1 (b): data file not found: d", 1)


def test_failure_on_every_rank_alike_is_said_once_plainly():
    failure = ("--batch 3 is wrong", 2)
    assert distributed.disagreement([_report(0, failure=failure), _report(1, failure=failure)]) == (failure[0], 2)


def test_a_failure_comes_before_facts_it_left_unset():
    message, _ = distributed.disagreement([_report(0, facts={"run to resume": "x"}),
                                           _report(1, failure=("no run to resume", 1))])
    assert message == "rank 1 (a): no run to resume"


def test_facts_that_differ():
    message, code = distributed.disagreement([_report(0, facts={"run to resume": "x"}),
                                              _report(1, facts={"run to resume": "y"})])
    assert code == 2
    assert "run to resume (x on rank 0 (a); y on rank 1 (a))" in message


def test_who_prints_an_error():
    rank1 = distributed.World(size=2, rank=1)
    assert distributed.silent_here(UsageError("x"), rank1)
    assert distributed.silent_here(distributed.WorldError("x"), rank1)
    assert not distributed.silent_here(BracliError("x"), rank1)
    assert not distributed.silent_here(UsageError("x"), distributed.World(size=2))
    local = distributed.on_this_rank(UsageError("bad"), rank1)
    assert str(local).startswith("rank 1 (") and str(local).endswith("): bad")
    assert local.exit_code == 2


def test_parameters_digest_sees_parameters_not_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = distributed.parameters_digest(model)
    model[1].running_mean += 1  # each rank keeps its own statistics
    assert distributed.parameters_digest(model) == before
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] += 1e-6
    assert distributed.parameters_digest(model) != before


def test_batch_checked_before_anything_heavy(bra, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "0")
    r = bra("train", "--batch", "5", "--epochs", "1")
    assert r.code == 2
    assert "--batch 5 does not split evenly over 2 processes" in r.err
    assert "use --batch 4 or 6" in r.err
    monkeypatch.setenv("RANK", "1")  # the same mistake on another rank: rank 0 says it, given time to
    monkeypatch.setattr(distributed, "REPORT_GRACE_S", 0.5)
    started = time.monotonic()
    r = bra("train", "--batch", "5", "--epochs", "1")
    assert (r.code, r.out, r.err) == (2, "", "")
    assert time.monotonic() - started >= 0.5


# ------------------------------------------------------------------------------- two nodes on this CPU

LAUNCH_TIMEOUT_S = 420  # a generous bound on a loaded 2-core machine; a hang fails here instead of waiting


@dataclass
class Node:
    code: int
    out: str
    err: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def recipe(nodes: int, port: int) -> list[str]:
    """docs/train.md's command for one node of a cluster, with the endpoint on this machine."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return [str(torchrun), "--nnodes", str(nodes), "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "bracli", "train"]


def _environment(pythonpath: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), os.environ.get("PYTHONPATH", "")]),
           distributed.TIMEOUT_ENV: "120"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def launched(argv: list[str], logs: Path, pythonpaths: list[Path], cwds: list[Path] | None = None,
             interrupt_when=None) -> Iterator[list[Node]]:
    """Start one torchrun agent per entry of ``pythonpaths`` (a "node" each; not run from the checkout, whose
    bracli ``-m`` would find first), wait for all of them (sending SIGINT to every node once ``interrupt_when()``
    is true), and kill whatever is left on the way out."""
    port, nodes = _free_port(), len(pythonpaths)
    logs.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    with contextlib.ExitStack() as files:
        try:
            for i, path in enumerate(pythonpaths):
                out = files.enter_context(open(logs / f"node{i}.out", "w"))
                err = files.enter_context(open(logs / f"node{i}.err", "w"))
                processes.append(subprocess.Popen(recipe(nodes, port) + argv, stdout=out, stderr=err,
                                                  env=_environment(path), cwd=(cwds or [logs] * nodes)[i],
                                                  start_new_session=True))
            deadline = time.monotonic() + LAUNCH_TIMEOUT_S
            interrupted = interrupt_when is None
            while any(p.poll() is None for p in processes):
                if time.monotonic() > deadline:
                    pytest.fail(f"torchrun did not finish within {LAUNCH_TIMEOUT_S} s; logs in {logs}")
                if not interrupted and interrupt_when():
                    for p in processes:
                        p.send_signal(signal.SIGINT)
                    interrupted = True
                time.sleep(0.2)
        finally:
            for p in processes:
                _stop(p)
    yield [Node(p.returncode, (logs / f"node{i}.out").read_text(), (logs / f"node{i}.err").read_text())
           for i, p in enumerate(processes)]


def _stop(agent: subprocess.Popen) -> None:
    """Kill a torchrun agent that is still running, and its workers (torchrun starts each in its own session)."""
    if agent.poll() is not None:
        return
    import psutil  # an ultralytics dependency

    with contextlib.suppress(psutil.NoSuchProcess):
        for process in [*psutil.Process(agent.pid).children(recursive=True), psutil.Process(agent.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    agent.wait()


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    from bracli.dataset.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("dist") / "data", seed=1, n_train=16, n_val=8, imgsz=64)


SOURCE = Path(bracli.__file__).resolve().parent.parent  # the bracli under test, for the child processes
SMALL_RUN = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--device", "cpu", "plots=False"]


def _lines_with(nodes: list[Node], text: str) -> list[str]:
    return [line for node in nodes for line in (node.out + node.err).splitlines() if text in line]


@pytest.mark.slow
def test_two_nodes_train_one_model(small_data, tmp_path):
    project = tmp_path / "runs"
    older = project / "train" / "results.csv"  # ultralytics' rank 1 would take this run's name and delete it
    older.parent.mkdir(parents=True)
    older.write_text("an older run\n")
    with launched([str(small_data), *SMALL_RUN, "--project", str(project)], tmp_path / "logs",
                  [SOURCE, SOURCE]) as nodes:
        assert [n.code for n in nodes] == [0, 0], nodes
    assert older.read_text() == "an older run\n"
    assert sorted(p.name for p in project.iterdir()) == ["train", "train-2"]  # one new run folder, by rank 0
    run = project / "train-2"
    record = yaml.safe_load((run / "bracli.yaml").read_text())
    world = record["world"]
    assert (world["size"], world["nodes"], world["backend"]) == (2, 2, "gloo")
    assert [r["rank"] for r in world["ranks"]] == [0, 1]
    digests = {r["weights"] for r in world["ranks"]}
    assert len(digests) == 1 and len(digests.pop()) == 64  # gradients averaged: both ranks hold one model
    assert world["weights_agree"] is True
    assert len(_lines_with(nodes, "final metrics")) == 1  # the table is printed by rank 0 only
    assert len(_lines_with(nodes, "run folder:")) == 1
    assert (run / "weights" / "best.pt").is_file()
    assert len((run / "results.csv").read_text().strip().splitlines()) == 2  # a header and the one epoch


@pytest.mark.slow
def test_versions_that_differ_stop_every_node_with_one_line(small_data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(SOURCE / "bracli", other / "bracli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SOURCE / "templates", other / "bracli" / "_templates")
    init = other / "bracli" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{bracli.__version__}"', '__version__ = "9.9.9"'))
    project = tmp_path / "runs"
    with launched([str(small_data), *SMALL_RUN, "--project", str(project)], tmp_path / "logs",
                  [SOURCE, other]) as nodes:
        assert all(n.code != 0 for n in nodes)
    errors = _lines_with(nodes, "bracli differs across the nodes")
    assert len(errors) == 1, errors
    assert f"{bracli.__version__} on rank" in errors[0] and "9.9.9 on rank" in errors[0]
    assert not project.exists()


@pytest.mark.slow
def test_a_start_up_failure_on_one_node_is_reported_once(small_data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    relative = os.path.relpath(small_data, small_data.parent.parent)  # found from one node's folder only
    started = time.monotonic()
    with launched([relative, *SMALL_RUN, "--project", str(tmp_path / "runs")], tmp_path / "logs",
                  [SOURCE, SOURCE], cwds=[small_data.parent.parent, elsewhere]) as nodes:
        assert all(n.code != 0 for n in nodes)
    assert time.monotonic() - started < 120  # nobody waited for the collective timeout
    errors = _lines_with(nodes, "data file not found")
    assert len(errors) == 1, errors
    assert "rank " in errors[0]


@pytest.mark.slow
def test_an_interrupted_two_node_run_resumes_on_the_same_world(small_data, tmp_path):
    project = tmp_path / "runs"
    run = project / "train"
    seen: dict[str, int] = {}

    def first_epoch_saved() -> bool:
        """results.csv has epoch 1 and last.pt stopped growing: interrupt during epoch 2."""
        csv, last = run / "results.csv", run / "weights" / "last.pt"
        if not (csv.is_file() and last.is_file()) or len(csv.read_text().strip().splitlines()) < 2:
            return False
        size = last.stat().st_size
        stable, seen["size"] = size == seen.get("size"), size
        return stable

    argv = [str(small_data), *SMALL_RUN, "--project", str(project)]
    argv[argv.index("--epochs") + 1] = "2"
    with launched(argv, tmp_path / "logs", [SOURCE, SOURCE], interrupt_when=first_epoch_saved) as nodes:
        assert all(n.code != 0 for n in nodes)
    assert len(_lines_with(nodes, "interrupted; resume with: torchrun <same options> -m bracli train --resume")) == 1
    with launched([str(run), "--resume", "--device", "cpu"], tmp_path / "logs-resumed", [SOURCE, SOURCE]) as nodes:
        assert [n.code for n in nodes] == [0, 0], nodes
    assert [p.name for p in project.iterdir()] == ["train"]
    rows = (run / "results.csv").read_text().strip().splitlines()[1:]
    epochs = [int(float(row.split(",")[0])) for row in rows]
    # epoch 1 trained once (the resume continued after it) and the run ended at 2; epoch 2 appears twice when the
    # interrupt landed after ultralytics wrote its results row but before it saved last.pt (then it is redone)
    assert epochs.count(1) == 1 and epochs[-1] == 2 and set(epochs) == {1, 2}
    world = yaml.safe_load((run / "bracli.yaml").read_text())["world"]
    assert world["size"] == 2 and world["weights_agree"] is True
