"""The demo restarts a dead control plane after waits that grow while it keeps dying."""

from __future__ import annotations

from controlplane.runtime.stack import Backoff


def test_waits_double_up_to_a_ceiling() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0)
    assert [backoff.next(now) for now in (0, 1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4, 4]


def test_a_process_that_stayed_up_long_enough_starts_from_the_first_wait_again() -> None:
    backoff = Backoff(first_s=0.5, max_s=30.0, reset_after_s=60.0)
    backoff.next(0)
    backoff.next(1)
    assert backoff.next(100) == 0.5
