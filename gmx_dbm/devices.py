"""The torch device a run uses: one place that parses ``--device`` / a config's ``device`` and refuses a
device this machine does not have (an ``InputError``: one line, exit code 2)."""
from __future__ import annotations

from .errors import InputError


def resolve_device(name: str | None = "cpu", where: str | None = None):
    """``cpu``, ``cuda`` or ``cuda:N`` -> ``torch.device``. ``cuda`` means the current CUDA device (under MPI
    or torchrun the caller sets it per rank first). ``where``: the option or config key, for the message."""
    import torch

    text = "cpu" if name is None else str(name).strip()
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise InputError(f"unknown device {text!r}: expected cpu, cuda or cuda:N", where=where) from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise InputError(f"device {text!r} is not supported: expected cpu, cuda or cuda:N", where=where)
    if not torch.cuda.is_available():
        build = "a CPU-only PyTorch build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build"
        raise InputError(f"device {text!r} requested but no CUDA device is available ({build}, "
                         f"torch {torch.__version__})", where=where)
    n = torch.cuda.device_count()
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= n:
        raise InputError(f"device {text!r} requested but this machine has {n} CUDA device(s) (0..{n - 1})",
                         where=where)
    return torch.device("cuda", index)


def local_device(name: str | None, local_rank: int, where: str | None = None):
    """The device of one process of a parallel run: ``cuda`` becomes ``cuda:(local_rank % n_gpus)``;
    ``cpu`` and an explicit ``cuda:N`` stay as they are."""
    import torch

    if str(name).strip() == "cuda" and torch.cuda.is_available():
        return resolve_device(f"cuda:{local_rank % torch.cuda.device_count()}", where=where)
    return resolve_device(name, where=where)


def generator_for(device):
    """A random generator on ``device``; seeded by the caller. Same seed -> same numbers on the same
    device type (CPU and CUDA streams differ)."""
    import torch

    return torch.Generator(device=device)


# CPU kernels a training run uses, pinned so that a run (and its resumption, and the retrained prefix a test
# compares) gives the same floats on x86-64 CPUs with and without AVX-512: torch picks vectorised ATen
# kernels, oneDNN convolutions and MKL's matrix products by the CPU's instruction set, and AVX-512 kernels
# sum in another order (measured: the sps config's 10th step, rec_rms 0.18408 nm with AVX2 kernels on an
# AVX2-only and an AVX-512 AMD CPU, 0.18382 with AVX-512 ones). The ATen setting is obeyed without a check
# of the hardware, so it is set only where the CPU has AVX2 and FMA; the other two are ceilings. All are
# read at the process's first tensor operation.
REPRODUCIBLE_CPU_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                            "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
# older spellings a user may have set instead
_ALSO_SET_BY = {"ONEDNN_MAX_CPU_ISA": ("DNNL_MAX_CPU_ISA",)}


def _cpuinfo(key: str) -> str | None:
    """The first value of ``key`` in Linux's /proc/cpuinfo; None where unknown."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags() -> set:
    """The CPU's feature flags; empty where unknown."""
    return set((_cpuinfo("flags") or "").split())


def cpu_name() -> str:
    """The processor's model name, else what ``platform`` knows."""
    import platform
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def pin_cpu_kernels(environ=None, flags=None) -> dict:
    """Set ``REPRODUCIBLE_CPU_KERNELS`` in the environment where the user has not set them; call before any
    tensor operation of the process. Only on x86-64 CPUs known to have AVX2 and FMA (elsewhere torch's own
    choice stays). Returns what was set."""
    import os
    import platform

    environ = os.environ if environ is None else environ
    flags = _cpu_flags() if flags is None else set(flags)
    if platform.machine().lower() not in ("x86_64", "amd64") or not {"avx2", "fma"} <= flags:
        return {}
    set_now = {}
    for key, value in REPRODUCIBLE_CPU_KERNELS.items():
        if key not in environ and not any(k in environ for k in _ALSO_SET_BY.get(key, ())):
            environ[key] = set_now[key] = value
    return set_now


_VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}


def cpu_vendor(name: str | None = None) -> str:
    """'AMD', 'Intel', or what else the CPU reports ('' where unknown); of the processor model ``name``
    (a ``cpu_name`` recorded elsewhere) when given. MKL takes other kernels on AMD than on Intel CPUs
    whatever the instruction-set ceiling (measured: the same 10 training steps, pinned to AVX2, end at
    reconstruction RMS 0.18408 nm on AMD Zen 3 and Zen 4, 0.18348 on an Intel Xeon), so a training run
    repeats to the bit only on CPUs of its vendor."""
    if name is not None:
        return next((v for v in _VENDORS.values() if v.lower() in name.lower()), "")
    vendor = _cpuinfo("vendor_id") or ""
    return _VENDORS.get(vendor, vendor)


def cpu_kernels() -> dict:
    """The CPU kernels of this process: the CPU's vendor (``cpu_vendor``), ATen's instruction set (e.g.
    ``AVX2``, ``AVX512``) and the oneDNN and MKL ceilings from the environment (None: the library's own
    choice)."""
    import os

    import torch

    return {"vendor": cpu_vendor(), "aten": torch.backends.cpu.get_cpu_capability(),
            "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA")),
            "mkl": os.environ.get("MKL_ENABLE_INSTRUCTIONS")}
