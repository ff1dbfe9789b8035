"""The energy model against hand-computed cases, and the RAPL probe on a fake sysfs tree."""

from __future__ import annotations

import pytest

from compresslab.core.energy import (
    HOROWITZ_45NM,
    OpEnergy,
    estimate_energy,
    mac_energy_pj,
    rapl_available,
    read_rapl_uj,
)


def test_horowitz_numbers():
    ops = HOROWITZ_45NM
    assert (ops.dram_read_32bit, ops.sram_read_32bit, ops.fp32_mult, ops.int8_mult, ops.fp32_add, ops.int8_add) == \
        (640.0, 5.0, 3.7, 0.2, 0.9, 0.03)


def test_lenet300_by_hand():
    # LeNet-300-100: 266,200 MACs; FP32 weights 1,066,440 bytes do not fit 64 KiB: DRAM
    e = estimate_energy(266_200, 1_066_440, "fp32", sram_bytes=64 * 1024)
    assert e.memory == "DRAM"
    assert e.compute_nj == pytest.approx(266_200 * (3.7 + 0.9) / 1000)
    assert e.memory_nj == pytest.approx(1_066_440 / 4 * 640 / 1000)
    # the same MACs in int8 from a 27 KB file on chip: mult 0.2 + int32 accumulate 0.1, SRAM reads 5 pJ
    small = estimate_energy(266_200, 27_000, "int8", sram_bytes=64 * 1024)
    assert small.memory == "SRAM" and small.total_nj == pytest.approx(266_200 * 0.3 / 1000 + 27_000 / 4 * 5 / 1000)
    assert e.total_nj / small.total_nj > 1000  # DRAM dominates: why Deep Compression aims at SRAM


def test_compute_kinds_and_custom_table():
    assert mac_energy_pj("binary") == mac_energy_pj("ternary") == 0.9  # a sign flip and an add
    assert mac_energy_pj("bf16") == mac_energy_pj("fp16") == pytest.approx(1.5)
    assert mac_energy_pj("fp32", OpEnergy(fp32_mult=1.0, fp32_add=1.0)) == 2.0
    assert estimate_energy(10, 4, sram_bytes=4).memory == "SRAM"  # fits exactly
    assert estimate_energy(10, 5, sram_bytes=4).memory == "DRAM"


def test_bad_values_raise():
    with pytest.raises(ValueError, match="compute='int5'"):
        mac_energy_pj("int5")
    assert mac_energy_pj("int2") == mac_energy_pj("int3") == mac_energy_pj("int8")  # no row below 8 bits
    with pytest.raises(ValueError, match="macs=-1"):
        estimate_energy(-1, 10)
    with pytest.raises(ValueError, match="OpEnergy.sram_read_32bit=-5"):
        OpEnergy(sram_read_32bit=-5)


def test_rapl_probe(tmp_path):
    ok, why = rapl_available(tmp_path / "missing")
    assert not ok and "does not exist" in why and read_rapl_uj(tmp_path / "missing") is None
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("12345\n")
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-domain (core) is not summed with its package
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999\n")
    assert rapl_available(tmp_path)[0] and read_rapl_uj(tmp_path) == 12345
