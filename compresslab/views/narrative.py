"""Prose built from a run's numbers: the quick-profile banner, accuracy changes with their interval,
the timing note next to a speed figure, and the closing summary (takeaways, self-check questions
with answers revealed on click, further reading)."""

from __future__ import annotations

from collections.abc import Sequence

from compresslab.core.latency import QUIET_SPREAD, SpeedTable
from compresslab.core.stats import PairedDifference

__all__ = ["smoke_banner", "change_phrase", "timing_note", "summary_markdown", "md"]


def md(text: str):
    """IPython Markdown of `text` (a string with the run's numbers already in it)."""
    from IPython.display import Markdown

    return Markdown(text)


def smoke_banner(quick: bool):
    """A banner for a quick-profile run (None in the full profile): its numbers are smoke-test quality."""
    if not quick:
        return None
    return md("> **Quick profile: smoke-test numbers.** Small data, few epochs and short timings: the accuracies, "
              "intervals and speed-ups below check that every cell runs; they are not the experiment's results. "
              "Run with `profile = \"full\"` for those.")


def change_phrase(diff: PairedDifference) -> str:
    """'-0.40 points (95% CI -0.90 to +0.10, McNemar p = 0.12): within noise' for an accuracy change."""
    verdict = ("within noise (the interval contains 0)" if diff.low_points <= 0 <= diff.high_points
               else "a real drop" if diff.high_points < 0 else "a real gain")
    return (f"{diff.delta_points:+.2f} points ({100 * diff.level:.0f}% CI {diff.low_points:+.2f} to "
            f"{diff.high_points:+.2f}, McNemar p = {diff.mcnemar_p:.2g} on {diff.n} images): {verdict}")


def timing_note(table: SpeedTable, labels: Sequence[str] | None = None,
                batch_sizes: Sequence[int] | None = None) -> tuple[bool, str]:
    """(reliable, Markdown sentence) for a speed figure: reliable when every compared timing has
    p90/p10 < 1.5; otherwise the sentence says, in bold, that its ratios are unreliable."""
    ok = table.reliable(labels, batch_sizes)
    rows = [r for r in table.rows if (labels is None or r.label in labels)
            and (batch_sizes is None or r.batch_size in batch_sizes)]
    worst = max((r.p90_ms / r.p10_ms for r in rows if r.p10_ms > 0), default=float("nan"))
    threads = ", ".join(str(t) for t in sorted({r.threads for r in rows}))
    scope = ""
    if labels is not None or batch_sizes is not None:  # say which timings the verdict covers
        scope = (f" of {', '.join(labels) if labels is not None else 'every variant'}"
                 f"{' at batch ' + ', '.join(map(str, batch_sizes)) if batch_sizes is not None else ''}")
    if ok:
        return True, (f"The timing{scope} was quiet (largest p90/p10 {worst:.2f} < {QUIET_SPREAD:g}, {threads} "
                      "thread(s)): those ratios can be read as measured.")
    return False, (f"**The timing{scope} was noisy (largest p90/p10 {worst:.2f}, at least {QUIET_SPREAD:g}; {threads} "
                   "thread(s)): treat these speed ratios as unreliable; no speed claim is checked in this run.**")


def summary_markdown(takeaways: Sequence[str], questions: Sequence[tuple[str, str]],
                     reading: Sequence[str]):
    """The closing summary: numbered takeaways, self-check questions whose answers open on click
    (HTML <details>), and further reading."""
    lines = ["### Takeaways (from this run's numbers)", ""]
    lines += [f"{i}. {t}" for i, t in enumerate(takeaways, 1)]
    lines += ["", "### Check yourself", ""]
    for q, a in questions:
        lines += [f"<details><summary><b>{q}</b> (click for the answer)</summary>", "", a, "", "</details>", ""]
    lines += ["### Further reading", ""] + [f"- {r}" for r in reading]
    return md("\n".join(lines))
