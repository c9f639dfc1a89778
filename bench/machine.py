"""What the numbers were measured on: CPU, cores, memory, library versions, and how busy the machine was."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path

# Distributions whose versions explain the numbers (those not installed are reported as such).
LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "opencv-python-headless", "pillow", "gradio",
             "gradio_client", "onnxruntime", "tf2onnx", "onnx", "ai-edge-litert", "psutil")
# CPU features that decide the float32 and int8 kernels TensorFlow, XNNPACK and ONNX Runtime pick.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")
BUSY_PROCESS_PERCENT = 10.0  # a process using more than this share of one core competes with the benchmark


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, list[str]]:
    """The CPU's model name and which of CPU_FLAGS it has, from /proc/cpuinfo."""
    model, flags = "unknown", set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return model, [flag for flag in CPU_FLAGS if flag in flags]


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def describe_machine() -> dict:
    import psutil

    model, flags = cpu_model()
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": psutil.virtual_memory().total / 2**30,
        "system": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "python": platform.python_version(),
        "libraries": library_versions(),
    }


def other_busy_processes(sample_s: float = 1.0) -> dict:
    """The load average and the other processes busy over `sample_s`: numbers taken while
    something else computes are not the machine's own, and the report names the culprits."""
    import psutil

    own = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    processes = [process for process in psutil.process_iter(["pid", "name", "cmdline"]) if process.pid not in own]
    for process in processes:
        try:
            process.cpu_percent(None)  # starts each process's measurement window
        except psutil.Error:
            pass
    time.sleep(sample_s)
    busy = []
    for process in processes:
        try:
            percent = process.cpu_percent(None)
        except psutil.Error:
            continue
        if percent > BUSY_PROCESS_PERCENT:
            command = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])
            busy.append({"pid": process.pid, "cpu_percent": percent, "command": command[:120]})
    return {"load_average": os.getloadavg(),
            "busy_processes": sorted(busy, key=lambda entry: -entry["cpu_percent"])}


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot, all cores together."""
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def own_cpu_seconds() -> float:
    """CPU seconds of this process and every process it started, running or finished."""
    import psutil

    process = psutil.Process()
    times = process.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += child_times.user + child_times.system
    return total
