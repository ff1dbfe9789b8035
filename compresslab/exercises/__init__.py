"""Graded exercises: building student notebooks from solutions (`building`), releasing them to
students (`releasing`), grading submissions outside the student's kernel (`grading`, `worker`,
`submission`), reports and feedback (`reporting`), the check mechanics (`checking`) and one
checks module per notebook (`checks`)."""
