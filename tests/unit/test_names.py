"""What may be a namespace, a service name or a uid."""

from __future__ import annotations

import pytest

from controlplane.domain import ServiceKey, check_pod_index, check_uid
from controlplane.errors import InvalidInput


@pytest.mark.parametrize("uid", ["alice", "user@example.com", "42", "a" * 256, "x-y_z.~!"])
def test_visible_ascii_uids_are_accepted(uid: str) -> None:
    assert check_uid(uid) == uid


@pytest.mark.parametrize("uid", ["", "a" * 257, "a\r\nb", "a b", "tab\t", "é", "nul\x00", "\x7f"])
def test_empty_long_or_invisible_uids_are_refused(uid: str) -> None:
    with pytest.raises(InvalidInput):
        check_uid(uid)


@pytest.mark.parametrize(
    ("namespace", "name"), [("", "svc"), ("ns", ""), ("a/b", "svc"), ("ns", "{tag}"), ("-x", "s")]
)
def test_names_that_would_break_keys_or_cluster_names_are_refused(
    namespace: str, name: str
) -> None:
    with pytest.raises(InvalidInput):
        ServiceKey.of(namespace, name)


def test_pod_index_zero_is_valid_and_negative_or_bool_is_not() -> None:
    assert check_pod_index(0) == 0
    for bad in (-1, True):
        with pytest.raises(InvalidInput):
            check_pod_index(bad)
