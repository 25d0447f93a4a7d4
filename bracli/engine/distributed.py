"""Training past one machine: the world torchrun sets up, and the collective steps bracli adds around
ultralytics' DDP.

torchrun (directly, or under SLURM's ``srun``) starts one process per GPU on every node and tells each its
place through the environment: ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``GROUP_WORLD_SIZE`` (nodes) and the rendezvous address. ultralytics 8.4 sizes its process group by the
devices listed in ``device`` instead, so bracli's trainer (``trainer.py``) takes the world from here.

Unlike the other engine modules this one imports neither torch nor ultralytics at its top: commands read the
world and reject a batch that does not split before torch loads. The collective steps import
``torch.distributed`` when they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from bracli import __version__
from bracli.errors import BracliError, UsageError

TIMEOUT_ENV = "BRA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800  # torch's own default for gloo; ranks wait this long for a peer before failing
REPORT_GRACE_S = 5.0  # how long a quiet rank waits for rank 0 to print a shared error (see step_aside)


@dataclass(frozen=True)
class World:
    """This process's place among all training processes (one process, rank 0, outside torchrun)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    local_size: int = 1
    nodes: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone writes the run folder and prints the result."""
        return self.rank == 0


def _whole_number(text: str) -> bool:
    return text.strip().isdigit()


def world(environ: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in the environment; ``WORLD_SIZE`` ≤ 1 (or unset) is one process, as in
    ultralytics, which trusts ``RANK``/``LOCAL_RANK`` only when ``WORLD_SIZE > 1``."""
    env = os.environ if environ is None else environ
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_WORLD_SIZE")
    if not _whole_number(env.get("WORLD_SIZE", "1")):
        raise UsageError(f"WORLD_SIZE={env['WORLD_SIZE']} is not a number; start bracli with torchrun, which sets it")
    size = int(env.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    wrong = [f"{name}={env.get(name, '(unset)')}" for name in names[1:]
             if (name in env or name in ("RANK", "LOCAL_RANK")) and not _whole_number(env.get(name, ""))]
    if wrong:
        raise UsageError(f"WORLD_SIZE={size} but {', '.join(wrong)}: each must be a whole number; start bracli "
                         "with torchrun, which sets all of them")
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    local_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
    nodes = int(env.get("GROUP_WORLD_SIZE", str(max(size // max(local_size, 1), 1))))
    if not (0 <= rank < size and 0 <= local_rank < max(local_size, 1)):
        raise UsageError(f"RANK={rank}, LOCAL_RANK={local_rank} do not fit WORLD_SIZE={size}, "
                         f"LOCAL_WORLD_SIZE={local_size}; start bracli with torchrun, which sets them")
    return World(size=size, rank=rank, local_rank=local_rank, local_size=local_size, nodes=nodes)


def check_batch(batch: float, world: World, option: str = "--batch") -> None:
    """Each process trains on ``batch / WORLD_SIZE`` images; ultralytics would round that down silently."""
    if not world.distributed:
        return
    if batch < 1 or batch != int(batch):
        raise UsageError(f"{option} {batch}: automatic batch sizes need one process; give a multiple of "
                         f"{world.size} (torchrun's WORLD_SIZE)")
    batch = int(batch)
    if batch % world.size == 0:
        return
    lower = batch // world.size * world.size
    sizes = [str(size) for size in (lower, lower + world.size) if size >= world.size]
    raise UsageError(f"{option} {batch} does not split evenly over {world.size} processes (torchrun's "
                     f"WORLD_SIZE); use {option} {' or '.join(sizes)}")


def local_device(device: str | None, world: World, cuda_available: bool) -> str:
    """The device of this process, as ``bracli.options.device`` spells devices: GPU ``LOCAL_RANK`` (or the
    ``LOCAL_RANK``-th of a ``--device`` list), or the CPU."""
    if device == "cpu" or (device is None and not cuda_available):
        return "cpu"
    if device is None:
        return str(world.local_rank)
    if device == "mps":
        raise UsageError("--device mps: Apple GPUs cannot train across processes; use CUDA GPUs or --device cpu")
    indices = device.split(",")
    if len(indices) == world.local_size:
        return indices[world.local_rank]
    raise UsageError(f"--device {device} names {len(indices)} GPU(s) but torchrun starts {world.local_size} "
                     "process(es) per node; name one GPU per process or leave --device out (each process then "
                     "takes GPU LOCAL_RANK)")


def backend(device_type: str) -> str:
    """NCCL between CUDA GPUs, gloo between CPUs: the only difference between the two paths."""
    return "nccl" if device_type == "cuda" else "gloo"


def timeout(environ: Mapping[str, str] | None = None) -> timedelta:
    """How long a rank waits for its peers in one collective step before it fails (``BRA_DIST_TIMEOUT``, s)."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UsageError(f"{TIMEOUT_ENV}={raw!r} is not a positive number of seconds")
    return timedelta(seconds=seconds)


def join(world: World, device: str) -> None:
    """Start the process group over the whole world (once per process) and check that every rank runs the same
    bracli. Whoever started the group first (bracli's engine, or ultralytics' own launcher) wins."""
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    where = torch.device("cpu") if device == "cpu" else torch.device("cuda", int(device))  # local_device's answer
    if where.type == "cuda":
        torch.cuda.set_device(where)
        os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")  # a timed-out step raises (as ultralytics sets it)
    try:
        dist.init_process_group(backend(where.type), timeout=timeout(), rank=world.rank, world_size=world.size,
                                device_id=where if where.type == "cuda" else None)
    except Exception as e:
        if not is_peer_failure(e):
            raise
        raise BracliError(f"the {world.size} processes did not all join within {timeout().total_seconds():.0f} s "
                          f"({TIMEOUT_ENV}): one failed to start; see its node's log") from e
    with start_up(world):
        pass


def leave() -> None:
    """Close the process group after a finished run (torch warns at exit about one left open)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: Any, source: int = 0) -> Any:
    """``value`` as rank ``source`` has it (any picklable object)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    import torch.distributed as dist

    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


class WorldError(BracliError):
    """An error every rank raises alike, after agreeing on it; rank 0 alone prints it."""

    everywhere = True

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def silent_here(error: BaseException, world: World) -> bool:
    """Whether this rank keeps quiet about ``error`` because rank 0 prints the same line: errors raised alike
    everywhere, and usage errors (decided from the command line, which every rank was given)."""
    return not world.main and (getattr(error, "everywhere", False) or isinstance(error, UsageError))


def step_aside(error: BaseException) -> None:
    """Before a rank other than 0 exits quietly on an error raised alike everywhere at start-up: wait, so that
    rank 0 prints it first. torchrun stops every process once one has exited with a failure; a rank that left
    at once could get rank 0 killed before it said why."""
    if isinstance(error, (UsageError, WorldError)):
        time.sleep(REPORT_GRACE_S)


def on_this_rank(error: BracliError, world: World) -> BracliError:
    """An error of this rank alone, with the rank and host in front (its exit code kept)."""
    local = BracliError(f"rank {world.rank} ({socket.gethostname()}): {error}")
    local.exit_code = error.exit_code
    return local


@dataclass
class StartUp:
    """What the ranks compare at start-up besides their bracli version and their own checks' outcome."""

    facts: dict[str, str] = field(default_factory=dict)

    def same(self, name: str, value: str) -> None:
        """Require ``value`` to be the same on every rank (say, the run to resume)."""
        self.facts[name] = value


@contextlib.contextmanager
def start_up(world: World) -> Iterator[StartUp]:
    """Run the caller's start-up checks on every rank, then agree: differing bracli versions or facts, or a
    failure on any rank, become the same one-line error on every rank (so no rank waits for a peer that is
    gone). Outside torchrun the checks just run. The process group must be started (``join``)."""
    state = StartUp()
    if not world.distributed:
        yield state
        return
    failure: tuple[str, int] | None = None
    cause: BaseException | None = None
    try:
        yield state
    except BracliError as e:
        failure, cause = (str(e), e.exit_code), e
    except Exception as e:  # a bug on one rank must not leave the others waiting
        failure, cause = (f"internal error: {type(e).__name__}: {e}", 1), e
    reports = gather({"rank": world.rank, "host": socket.gethostname(), "version": __version__,
                      "failure": failure, "facts": state.facts})
    message, code = disagreement(reports)
    if message:
        raise WorldError(message, code) from cause


def disagreement(reports: list[dict[str, Any]]) -> tuple[str | None, int]:
    """The one line (and exit code) for what the ranks reported at start-up, or (None, 0) when they agree."""
    versions = _by_value(reports, lambda r: r["version"])
    if len(versions) > 1:
        found = "; ".join(f"{version} on {where}" for version, where in versions.items())
        return f"bracli differs across the nodes ({found}); install the same version on every node", 1
    failed = [r for r in reports if r["failure"]]
    if failed:
        message, code = failed[0]["failure"]
        if len(failed) < len(reports) or any(r["failure"] != failed[0]["failure"] for r in failed):
            more = f" (and {len(failed) - 1} more rank(s))" if len(failed) > 1 else ""
            message = f"rank {failed[0]['rank']} ({failed[0]['host']}){more}: {message}"
        return message, code
    for name in reports[0]["facts"]:
        values = _by_value(reports, lambda r, name=name: r["facts"].get(name))
        if len(values) > 1:
            found = "; ".join(f"{value} on {where}" for value, where in values.items())
            return f"the ranks disagree on the {name} ({found}); give it explicitly", 2
    return None, 0


def _by_value(reports: list[dict[str, Any]], key) -> dict[Any, str]:
    """value → "ranks 0-3 (host-a), rank 4 (host-b)": where each value was found."""
    found: dict[Any, list[dict[str, Any]]] = {}
    for report in reports:
        found.setdefault(key(report), []).append(report)
    described = {}
    for value, holders in found.items():
        hosts = sorted({r["host"] for r in holders})
        ranks = [r["rank"] for r in holders]
        label = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {_spans(ranks)}"
        described[value] = f"{label} ({', '.join(hosts)})"
    return described


def _spans(numbers: list[int]) -> str:
    """[0, 1, 2, 5] → "0-2, 5"."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def parameters_digest(module) -> str:
    """SHA-256 of a model's parameters (names and bytes). DDP keeps parameters identical on every rank; the
    BatchNorm statistics are buffers, which each rank keeps from its own share of the data."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.named_parameters(), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class WorldReport:
    """Who trained: the world, and each rank's final parameters digest (equal when gradients were averaged)."""

    size: int
    nodes: int
    backend: str
    ranks: list[dict[str, Any]]

    @property
    def weights_agree(self) -> bool:
        return len({r["weights"] for r in self.ranks}) == 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weights_agree": self.weights_agree}


def world_report(world: World, module) -> WorldReport:
    """Gather every rank's host and parameters digest (a collective step: every rank calls it)."""
    import torch.distributed as dist

    ranks = gather({"rank": world.rank, "host": socket.gethostname(), "weights": parameters_digest(module)})
    return WorldReport(size=world.size, nodes=world.nodes, backend=dist.get_backend(), ranks=ranks)


def wrap_cpu(model, compiled: bool):
    """DDP for a model on the CPU: ultralytics passes ``device_ids=[device.index]``, which is ``[None]`` on the
    CPU and refused by DDP; the other settings are the ones ultralytics chooses on GPUs."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    no_buffer_sync = ("forward_sync_buffers" if "forward_sync_buffers" in
                      inspect.signature(DistributedDataParallel).parameters else "broadcast_buffers")
    return DistributedDataParallel(model, find_unused_parameters=not compiled, static_graph=compiled,
                                   **{no_buffer_sync: False})


def is_peer_failure(error: BaseException) -> bool:
    """A collective step that failed because a peer is gone or stalled: torch's distributed errors, and the
    RuntimeErrors gloo raises from its transport (a reset connection, a timed-out receive)."""
    from torch.distributed import DistError

    if isinstance(error, DistError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in PEER_FAILURE_MARKERS)


PEER_FAILURE_MARKERS = ("gloo/transport", "Connection reset by peer", "Connection closed by peer")
