"""Graded exercises: building student notebooks from solutions (`building`), releasing them to
students (`releasing`), grading submissions outside the student's kernel (`grading`, `worker`,
`submission`), reports and feedback (`reporting`), the check mechanics (`checking`) and one
checks module per notebook (`checks`)."""

from compresslab.exercises.building import *  # noqa: F403
from compresslab.exercises.grading import *  # noqa: F403
from compresslab.exercises.releasing import *  # noqa: F403
