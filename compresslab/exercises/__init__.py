"""Graded exercises: building student notebooks from solutions and grading them (`building`), the
check mechanics (`checking`) and one checks module per notebook (`checks`)."""

from compresslab.exercises.building import *  # noqa: F403
