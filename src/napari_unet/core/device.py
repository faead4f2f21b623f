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

__all__ = ["configure_cpu_threads", "describe_devices", "pick_device"]

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
