"""One exception hierarchy for the whole control plane.

The admin API maps these to HTTP status codes in one place (``http_status``); nothing else
in the code base decides a status code.
"""

from __future__ import annotations


class StatefulRouteError(Exception):
    """Base of every error the control plane raises on purpose."""

    http_status = 500
    code = "internal"

    def __init__(self, message: str, **detail: object) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


class InvalidInput(StatefulRouteError, ValueError):
    """A name, uid, index or weight that breaks the domain's rules.

    Also a ValueError, so pydantic validators that raise it yield a ValidationError.
    """

    http_status = 400
    code = "invalid_input"


class NotFound(StatefulRouteError):
    http_status = 404
    code = "not_found"


class UnknownService(NotFound):
    code = "unknown_service"


class UnknownPod(NotFound):
    code = "unknown_pod"


class NotBound(NotFound):
    code = "not_bound"


class NoLease(NotFound):
    code = "no_lease"


class Conflict(StatefulRouteError):
    """The request is well formed but the current state forbids it."""

    http_status = 409
    code = "conflict"


class PodNotEligible(Conflict):
    code = "pod_not_eligible"


class NoHealthyPods(StatefulRouteError):
    """No pod of the service may take a user right now."""

    http_status = 503
    code = "no_healthy_pods"


class StoreUnavailable(StatefulRouteError):
    """Redis could not be reached or answered with an error."""

    http_status = 503
    code = "store_unavailable"


class NewUsersLimited(StatefulRouteError):
    """The service binds no new user now: it holds its maximum of bound users, or new users
    arrive faster than its rate (``detail['reason']``). Bound users are not affected."""

    http_status = 429
    code = "new_users_limited"
