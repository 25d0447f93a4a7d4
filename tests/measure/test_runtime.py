"""Peak memory tracked at the dispatcher, and latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bracli.errors import UsageError
from bracli.measure import runtime as prof


def test_tracker_counts_live_bytes_and_their_peak():
    known = torch.zeros(100)
    with prof.TensorMemoryTracker([known]) as tracker:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(2000)  # 8000: peak 12000
        del a
        c = torch.empty(500)  # 2000 on top of b's 8000
        known.add_(1)  # in place on a tensor that existed before: not an allocation
        view = b[:10]  # a view shares b's storage
    assert tracker.peak_bytes == 12000
    assert tracker.live_bytes == 10000
    del b, c, view


def test_memory_of_known_layers():
    conv = nn.Conv2d(3, 8, 1, bias=False)  # output 1×8×32×32 float32 = 32768 bytes
    memory = prof.measure_memory(conv, 32, 1, channels=3)
    assert memory.forward_bytes == 32768
    assert 32768 + conv.weight.numel() * 4 <= memory.train_bytes <= 32768 + 1024  # + weight gradient, scalars
    assert memory.method == prof.CPU_MEMORY_METHOD
    assert conv.weight.grad is None
    two = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.ReLU())  # conv output and ReLU output alive together
    assert prof.measure_memory(two, 32, 1, channels=3).forward_bytes == 2 * 32768


def test_latency_reports_median_and_spread():
    latency = prof.measure_latency(nn.Conv2d(3, 8, 3), 32, 2, warmup=1, runs=5, channels=3)
    assert 0 < latency.p10_ms <= latency.median_ms <= latency.p90_ms
    assert (latency.runs, latency.warmup, latency.batch) == (5, 1, 2)
    assert latency.cpu_threads == torch.get_num_threads() and not latency.synchronized
    with pytest.raises(UsageError):
        prof.measure_latency(nn.Conv2d(3, 8, 3), 32, runs=0, channels=3)

