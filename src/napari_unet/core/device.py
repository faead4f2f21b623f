"""Choice of the compute device (CUDA → MPS → CPU) and sane CPU threading.

Examples
--------
>>> pick_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = [
    "configure_cpu_threads",
    "cpu_layout",
    "cpu_supports_bf16",
    "describe_devices",
    "pick_device",
    "use_channels_last",
    "use_cpu_bf16",
]

logger = logging.getLogger(__name__)

_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The device to compute on.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device or None
        ``"auto"`` (or None) picks CUDA if available, else Apple's MPS, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        An unknown name, or a device that this machine does not have.

    Examples
    --------
    >>> pick_device("auto").type in ("cuda", "mps", "cpu")
    True
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    name = "auto" if requested is None else str(requested).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in _CHOICES:
        raise ValueError(
            f"device: expected one of {', '.join(_CHOICES)} (or 'cuda:N'), got {requested!r}"
        )
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device: 'cuda' was requested but no CUDA GPU is available to PyTorch "
                f"(torch {torch.__version__}); use --device auto or cpu, or install a CUDA build"
            )
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device: {name!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
        return dev
    if kind == "mps" and not _mps_available():
        raise ValueError("device: 'mps' was requested but Apple's MPS is not available here")
    return torch.device(name)


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16() -> bool:
    """True if this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), so that
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` is fast rather than emulated.

    Asks PyTorch (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported`` and
    oneDNN's bf16 check); where those are missing, the ``/proc/cpuinfo`` flags. False whenever
    the answer is unsure.

    Examples
    --------
    >>> isinstance(cpu_supports_bf16(), bool)
    True
    """
    checks = []
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, name, None)
        if callable(fn):
            try:
                checks.append(bool(fn()))
            except Exception:
                pass
    if not checks:
        flags = _cpuinfo_flags()
        checks.append(bool(flags & {"avx512_bf16", "amx_bf16"}))
    if not any(checks):
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def use_cpu_bf16(setting: str | bool | None, device: torch.device | str) -> bool:
    """Whether training on ``device`` runs under bfloat16 autocast on the CPU.

    ``setting``: "auto" (or None) — where the CPU supports bf16 natively; "on"/True — always on
    the CPU (slow where emulated); "off"/False — never. Other devices: always False (CUDA
    uses float16 mixed precision).

    Examples
    --------
    >>> use_cpu_bf16("off", "cpu"), use_cpu_bf16("on", "cpu")
    (False, True)
    """
    if torch.device(device).type != "cpu":
        return False
    value = {None: "auto", True: "on", False: "off"}.get(setting, setting)
    if value not in ("auto", "on", "off"):
        raise ValueError(f"cpu_bf16: expected 'auto', 'on' or 'off', got {setting!r}")
    return value == "on" or (value == "auto" and cpu_supports_bf16())


def use_channels_last(setting: str | None, device: torch.device | str, *, ndim: int,
                      bf16: bool, processes: int = 1) -> bool:
    """Whether a training on ``device`` keeps its network and inputs channels-last (NHWC in
    2D, NDHWC in 3D): the same numbers, in another order.

    On CUDA: 2D networks, always (mixed precision; 3D is unmeasured there and stays
    contiguous). On the CPU in one process, ``setting`` "auto" (or None): a 2D network in float32
    (1.15x a step of the CPU recipe; with bfloat16 autocast the contiguous layout was faster)
    and every 3D network (a step of the volume recipe on the ovule cells 1.37x with bfloat16
    autocast, ``benchmarks/bench_3d_step.py``); "on": always; "off": never. Under several CPU
    processes: never.

    Examples
    --------
    >>> use_channels_last("auto", "cpu", ndim=3, bf16=True), use_channels_last("auto", "cpu",
    ...                                                                        ndim=2, bf16=True)
    (True, False)
    """
    kind = torch.device(device).type
    value = "auto" if setting is None else setting
    if value not in ("auto", "on", "off"):
        raise ValueError(f"cpu_channels_last: expected 'auto', 'on' or 'off', got {setting!r}")
    if kind == "cuda":
        return ndim == 2
    if kind != "cpu" or processes > 1:
        return False
    return value == "on" or (value == "auto" and (ndim == 3 or not bf16))


def cpu_layout(model: torch.nn.Module, *, channels_last: bool = True) -> torch.nn.Module:
    """Put a 2D network's float32 weights on the CPU in the channels-last layout (in place).

    Every activation of a convolution with channels-last weights is channels-last too, which
    made a float32 prediction of the CPU recipe (depth 3, base 16) 1.6-2.0x faster and a
    training step 1.15-1.2x. ``channels_last=False`` restores the contiguous layout (e.g. for
    bfloat16 autocast, where it was the faster one). 3D networks, other devices and other
    dtypes are left as they are. Returns ``model``.

    Examples
    --------
    >>> net = cpu_layout(torch.nn.Conv2d(2, 4, 3))
    >>> net.weight.is_contiguous(memory_format=torch.channels_last), net.weight.is_contiguous()
    (True, False)
    """
    convs = [p for p in model.parameters() if p.ndim == 4]
    if not convs or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in convs):
        return model  # 3D networks have no 4D weights
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(memory_format=fmt)


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count to ``threads`` or, by default, the usable CPU cores.

    Returns the number set. Respects ``OMP_NUM_THREADS`` when it is set and ``threads`` is None.

    Examples
    --------
    >>> configure_cpu_threads(1)
    1
    """
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        if env and env.isdigit() and int(env) > 0:
            threads = int(env)
        else:
            try:
                threads = len(os.sched_getaffinity(0))
            except AttributeError:  # macOS, Windows
                threads = os.cpu_count() or 1
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def describe_devices() -> str:
    """One line per available device, for the GUI and ``--verbose`` logs.

    Examples
    --------
    >>> "cpu" in describe_devices()
    True
    """
    lines = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB")
    if _mps_available():
        lines.append("mps: Apple Metal GPU")
    lines.append(f"cpu: {torch.get_num_threads()} threads (torch {torch.__version__})")
    lines.insert(0, f"auto -> {pick_device('auto')}")
    return "\n".join(lines)
