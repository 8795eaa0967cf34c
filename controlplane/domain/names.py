"""Validation of the names that end up in Redis keys, Envoy config and HTTP headers."""

from __future__ import annotations

import re
from typing import NamedTuple

from controlplane.errors import InvalidInput

MAX_NAME_LENGTH = 256
# Namespaces and services become Envoy cluster names and Redis hash tags: no braces, no '/'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# A uid travels in an HTTP header and a Redis hash field: visible ASCII only (no CR/LF, no space).
_UID = re.compile(r"[\x21-\x7e]+")
# The same rules as JSON Schema (OpenAPI path parameters and bodies describe them from here).
NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": f"^{_NAME.pattern}$",
}
UID_SCHEMA = {**NAME_SCHEMA, "pattern": f"^{_UID.pattern}$"}

MAX_HOST_NAME_LENGTH = 253
# A pod's DNS name: dot-separated labels of letters, digits, '-' and '_' (compose service names
# may hold '_'), as a StatefulSet's "<name>-<i>.<headless service>" or a compose name "pod-0".
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
HOST_NAME_SCHEMA = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_HOST_NAME_LENGTH,
    "pattern": f"^{_HOST_NAME.pattern}$",
}
# The ordinal at the end of a name's first label: "echo-2.echo" -> 2, "pod-0" -> 0.
_ORDINAL = re.compile(r"-([0-9]{1,9})$")
# A name that carries one, as JSON Schema (with HOST_NAME_SCHEMA's pattern besides).
ORDINAL_NAME_PATTERN = r"^[^.]*-[0-9]{1,9}(\.|$)"


def check_name(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid namespace or service name, else raise InvalidInput."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"{kind} must be 1 to {MAX_NAME_LENGTH} characters", field=kind)
    if not _NAME.fullmatch(value):
        raise InvalidInput(
            f"{kind} may hold only letters, digits, '.', '_' and '-' and must start with a "
            "letter or digit",
            field=kind,
        )
    return value


def check_uid(value: str) -> str:
    """Return ``value`` if it is a valid user id, else raise InvalidInput."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise InvalidInput(f"uid must be 1 to {MAX_NAME_LENGTH} characters", field="uid")
    if not _UID.fullmatch(value):
        raise InvalidInput("uid may hold only visible ASCII characters", field="uid")
    return value


def check_host_name(value: str) -> str:
    """Return ``value`` if it is a valid DNS name for a pod, else raise InvalidInput."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_HOST_NAME_LENGTH:
        raise InvalidInput(f"name must be 1 to {MAX_HOST_NAME_LENGTH} characters", field="name")
    if not _HOST_NAME.fullmatch(value):
        raise InvalidInput(
            "name must be a DNS name: labels of letters, digits, '-' and '_' (at most 63 "
            "characters each, not starting or ending with '-') joined by '.'",
            field="name",
        )
    return value


def ordinal_of(name: str) -> int | None:
    """The pod index a name carries at the end of its first label (a StatefulSet's ordinal:
    "echo-2.echo" -> 2, "pod-0" -> 0), or None if it carries none."""
    found = _ORDINAL.search(name.split(".", 1)[0])
    return None if found is None else int(found[1])


def check_pod_index(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput("pod index must be a whole number >= 0", field="pod")
    return value


class ServiceKey(NamedTuple):
    """Identifies a service: ``namespace/name``."""

    namespace: str
    name: str

    @classmethod
    def of(cls, namespace: str, name: str) -> ServiceKey:
        return cls(check_name("namespace", namespace), check_name("service", name))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"
