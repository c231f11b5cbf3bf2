from __future__ import annotations

import toolkit


def test_public_names_are_sorted_and_exist() -> None:
    assert toolkit.__all__ == sorted(toolkit.__all__)
    for name in toolkit.__all__:
        assert hasattr(toolkit, name), name


def test_error_exit_codes() -> None:
    assert toolkit.EdgeError.exit_code == 1
    for usage_error in (toolkit.ModelError, toolkit.TargetError, toolkit.OutputError):
        assert issubclass(usage_error, toolkit.UsageError)
        assert usage_error.exit_code == 2
