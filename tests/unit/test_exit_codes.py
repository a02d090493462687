"""The operator's list of permanent exit codes is the toolkit's, not a copy that can drift."""

from __future__ import annotations

from azaion_loader import errors
from azaion_operator import crd

USAGE = 2  # argparse's exit code for a bad command line: never fixed by a retry


def _error_classes() -> list[type[errors.LoaderError]]:
    found: list[type[errors.LoaderError]] = []
    pending: list[type[errors.LoaderError]] = [errors.LoaderError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def test_each_error_class_has_its_own_exit_code() -> None:
    codes = [cls.exit_code for cls in _error_classes()]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_operator_permanent_codes_are_the_toolkits() -> None:
    permanent = {cls.exit_code for cls in _error_classes() if cls.permanent}
    assert set(crd.PERMANENT_EXIT_CODES) == permanent | {USAGE}
    assert list(crd.PERMANENT_EXIT_CODES) == sorted(crd.PERMANENT_EXIT_CODES)
