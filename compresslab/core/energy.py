"""An energy *model* of one inference (an estimate, not a measurement), and real counters if present.

Per-operation energies from Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, at 45 nm and 0.9 V (the numbers Han et al. use to motivate Deep Compression):

    32-bit DRAM read 640 pJ, 32-bit SRAM read (8 KB array) 5 pJ,
    FP32 multiply 3.7 pJ, FP32 add 0.9 pJ, FP16 multiply 1.1 pJ, FP16 add 0.4 pJ,
    INT32 multiply 3.1 pJ, INT32 add 0.1 pJ, INT8 multiply 0.2 pJ, INT8 add 0.03 pJ.

One inference of one example costs

    E = MACs * (e_mult + e_acc)  +  (weight_bytes / 4) * e_read,

e_read = SRAM read when the whole weight file fits in `sram_bytes` of on-chip memory, else DRAM
read (weights fetched once per inference, as 32-bit words). MAC energies per compute kind:
fp32 = FP32 mult + FP32 add; fp16 and bf16 = FP16 mult + FP16 add (Horowitz has no bf16 row);
int8 = INT8 mult + INT32 add (the accumulator is 32-bit); int4, int3 and int2 = as int8 (no row
below 8 bits: an upper bound); ternary and binary = an FP32 add only (a weight of +-alpha or 0 turns a multiply into
an add or subtract; one multiply by alpha per output is left out). Activation traffic is left out.
The DRAM term dominates by two orders of magnitude for any model that does not fit on chip: that is
why Deep Compression aims at SRAM.

Real counters: Intel/AMD RAPL under /sys/class/powercap (`rapl_available`, `read_rapl_uj`); most
virtual machines do not expose them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from compresslab.core.validate import check_choice, check_float, check_overflow

__all__ = ["OpEnergy", "HOROWITZ_45NM", "COMPUTE_KINDS", "EnergyEstimate", "mac_energy_pj",
           "estimate_energy", "RAPL_ROOT", "rapl_available", "read_rapl_uj"]

COMPUTE_KINDS = ("fp32", "fp16", "bf16", "int8", "int4", "int3", "int2", "ternary", "binary")


@dataclass(frozen=True)
class OpEnergy:
    """Energy per operation in picojoules (defaults: Horowitz, ISSCC 2014, 45 nm)."""

    dram_read_32bit: float = 640.0
    sram_read_32bit: float = 5.0
    fp32_mult: float = 3.7
    fp32_add: float = 0.9
    fp16_mult: float = 1.1
    fp16_add: float = 0.4
    int32_mult: float = 3.1
    int32_add: float = 0.1
    int8_mult: float = 0.2
    int8_add: float = 0.03

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            check_float("OpEnergy", name, value, 0, None)


HOROWITZ_45NM = OpEnergy()


def mac_energy_pj(compute: str, ops: OpEnergy = HOROWITZ_45NM) -> float:
    """Energy of one multiply-accumulate of a compute kind (see the module docstring), in pJ.

    >>> [round(mac_energy_pj(k), 2) for k in ("fp32", "bf16", "int8", "ternary")]
    [4.6, 1.5, 0.3, 0.9]
    """
    check_choice("", "compute", compute, COMPUTE_KINDS)
    if compute == "fp32":
        return ops.fp32_mult + ops.fp32_add
    if compute in ("fp16", "bf16"):
        return ops.fp16_mult + ops.fp16_add
    if compute in ("int8", "int4", "int3", "int2"):
        return ops.int8_mult + ops.int32_add
    return ops.fp32_add


@dataclass(frozen=True)
class EnergyEstimate:
    """One inference's estimated energy, split into compute and weight reads (nanojoules)."""

    compute_nj: float
    memory_nj: float
    memory: str  # "SRAM" or "DRAM": where the weights are read from
    macs: float
    weight_bytes: float
    compute: str

    @property
    def total_nj(self) -> float:
        return self.compute_nj + self.memory_nj

    def to_dict(self) -> dict:
        return {**asdict(self), "total_nj": self.total_nj}


def estimate_energy(macs: float, weight_bytes: float, compute: str = "fp32", sram_bytes: float = 64 * 1024,
                    ops: OpEnergy = HOROWITZ_45NM) -> EnergyEstimate:
    """E = macs * e_mac(compute) + weight_bytes / 4 * (SRAM read if weight_bytes <= sram_bytes else DRAM).

    macs: the multiply-accumulates executed per example (a kernel that skips zeros executes only the
    non-zero ones); weight_bytes: the bytes of the stored weights (the artifact's file).

    >>> e = estimate_energy(macs=1000, weight_bytes=4000, compute="fp32", sram_bytes=1024)  # 1000 words from DRAM
    >>> round(e.compute_nj, 3), round(e.memory_nj, 1), e.memory
    (4.6, 640.0, 'DRAM')
    >>> estimate_energy(1000, 4000, "int8", sram_bytes=4096).memory_nj  # 1000 words * 5 pJ, on chip
    5.0
    """
    check_float("", "macs", macs, 0, None)
    check_float("", "weight_bytes", weight_bytes, 0, None)
    check_float("", "sram_bytes", sram_bytes, 0, None)
    on_chip = weight_bytes <= sram_bytes
    read = ops.sram_read_32bit if on_chip else ops.dram_read_32bit
    compute_nj, memory_nj = macs * mac_energy_pj(compute, ops) / 1000.0, weight_bytes / 4.0 * read / 1000.0
    check_overflow("the compute energy macs * e_mac", compute_nj)
    check_overflow("the memory energy weight_bytes / 4 * e_read", memory_nj)
    return EnergyEstimate(compute_nj=compute_nj, memory_nj=memory_nj, memory="SRAM" if on_chip else "DRAM",
                          macs=float(macs), weight_bytes=float(weight_bytes), compute=compute)


RAPL_ROOT = Path("/sys/class/powercap")


def _rapl_files(root: Path = RAPL_ROOT) -> list[Path]:
    return sorted(p / "energy_uj" for p in root.glob("intel-rapl:*") if ":" in p.name and p.name.count(":") == 1)


def rapl_available(root: str | Path = RAPL_ROOT) -> tuple[bool, str]:
    """(True, where) when a package energy counter can be read, else (False, why not)."""
    root = Path(root)
    if not root.exists():
        return False, f"{root} does not exist: this machine (often a VM) exposes no RAPL energy counters"
    files = _rapl_files(root)
    if not files:
        return False, f"{root} has no intel-rapl package domain"
    try:
        int(files[0].read_text().strip())
    except (OSError, ValueError) as err:
        return False, f"{files[0]} is not readable ({type(err).__name__}); reading it usually needs root"
    return True, ", ".join(str(f) for f in files)


def read_rapl_uj(root: str | Path = RAPL_ROOT) -> int | None:
    """The sum of the package energy counters in microjoules, or None when unavailable (the
    counters wrap around; take differences over short intervals)."""
    ok, _ = rapl_available(root)
    if not ok:
        return None
    return sum(int(f.read_text().strip()) for f in _rapl_files(Path(root)))
