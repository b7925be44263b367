"""System metrics (CPU, memory; GPU where present) under MLflow's names, ``system/...``, so the
run's System metrics tab shows them.

MLflow's own monitor is a thread per run that writes to the tracking store every few seconds.
Here the processes that train do not all write to the store (a trial's runs are logged by the
driver, a Ray Train job's by rank 0), so each process samples at its reports and the samples
travel with them; a Ray Train worker's are logged under its own node id,
``system/worker_<rank>/...``.
"""

from __future__ import annotations

import contextlib
import os

import psutil
import torch

PREFIX = "system/"


class SystemSampler:
    """Samples this process's machine: CPU use since the previous sample, memory now, GPU
    memory (and utilization where NVML answers) for each visible GPU."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(None)  # the first call starts the interval the next one measures
        self._process.cpu_percent(None)

    def sample(self) -> dict[str, float]:
        memory = psutil.virtual_memory()
        values = {
            "cpu_utilization_percentage": psutil.cpu_percent(None),
            "process_cpu_utilization_percentage": self._process.cpu_percent(None),
            "system_memory_usage_megabytes": memory.used / 1e6,
            "system_memory_usage_percentage": memory.percent,
            "process_memory_rss_megabytes": self._process.memory_info().rss / 1e6,
        }
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                values[f"gpu_{i}_memory_usage_megabytes"] = torch.cuda.memory_allocated(i) / 1e6
                with contextlib.suppress(Exception):  # no NVML: memory is still worth logging
                    values[f"gpu_{i}_utilization_percentage"] = float(torch.cuda.utilization(i))
        return values


def named(sample: dict[str, float], node_id: str | None = None) -> dict[str, float]:
    """The sample's metric names: ``system/<name>``, or ``system/<node_id>/<name>``."""
    prefix = PREFIX + (f"{node_id}/" if node_id else "")
    return {prefix + k: v for k, v in sample.items()}
