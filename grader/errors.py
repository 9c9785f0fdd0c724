"""The one error of the grader itself (as opposed to a submission's failure, which is a score)."""


class GradeError(RuntimeError):
    """The grader itself cannot run (bad lab, no root, missing way, no student user): the
    command exits non-zero instead of writing a score."""
