"""The report of deploy.apply_int8: real INT8 against FP32, on the one Report base."""

from __future__ import annotations

from dataclasses import dataclass, field

from compresslab.core.report import Report, fmt_percent

__all__ = ["DeployReport"]


@dataclass(kw_only=True, repr=False)
class DeployReport(Report):
    """Report of apply_int8: FP32 (before) and real INT8 (after) test accuracy in percent, the torchao
    reference (the converted graph uncompiled: float q/dq simulation) and the share of test
    predictions where INT8 == reference (percent). Stored bytes: the graph's int8 weights + float
    biases, scales and zero points (int8_bytes). timings: every measured variant; latency: INT8's
    median at the smallest batch; speedups: FP32 / INT8 median latency."""

    method: str = "ptq"
    compiled: bool = False
    threads: int = 1
    accuracy_reference: float | None = None
    agreement_reference: float | None = None
    int8_bytes: dict = field(default_factory=dict)
    timings: list[dict] = field(default_factory=list)
    speedups: dict = field(default_factory=dict)
    compile_seconds: float = 0.0
    warning: str | None = None
    extra: dict = field(default_factory=dict)

    technique = "INT8 (PT2E)"

    @property
    def fp32_bytes(self) -> int:
        return self.size_before.fp32_bytes

    def headline_extra(self) -> list[str]:
        parts = [f"{self.method.upper()}, {'compiled' if self.compiled else 'NOT compiled'}, {self.threads} threads",
                 f"torchao reference {fmt_percent(self.accuracy_reference)}"]
        if self.warning:
            parts.append(f"<b>Warning:</b> {self.warning}")
        return parts

    def extra_tables(self) -> list:
        import pandas as pd

        return [pd.DataFrame(self.timings)] if self.timings else []
