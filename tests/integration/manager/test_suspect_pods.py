"""A pod failing its health checks (SUSPECT) takes new users only when no healthy pod can."""

from __future__ import annotations

from controlplane.domain import HealthReport, PodState, RouteRequest
from controlplane.manager import StatefulRouteManager

from .conftest import KEY, NS, SVC, MakeService


async def place(manager: StatefulRouteManager, prefix: str, count: int) -> dict[str, int]:
    placed = {}
    for i in range(count):
        request = RouteRequest(namespace=NS, service=SVC, uid=f"{prefix}{i}")
        placed[request.uid] = (await manager.route_request(request)).pod_index
    return placed


async def test_a_suspect_pod_keeps_its_users_but_takes_no_new_ones_while_a_healthy_pod_can(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1, 1))
    before = await place(manager, "early", 30)
    on_one = [uid for uid, pod in before.items() if pod == 1]
    assert on_one
    timed_out = HealthReport(is_healthy=False, reason="health check timed out after 1s")
    await manager.update_pod_health(KEY, 1, timed_out)
    assert (await manager.get_service_load_status(KEY))[1].state is PodState.SUSPECT

    assert 1 not in (await place(manager, "late", 60)).values()
    again = await place(manager, "early", 30)
    assert {uid: again[uid] for uid in on_one} == dict.fromkeys(on_one, 1)  # bound users stay


async def test_a_suspect_pod_takes_new_users_when_no_healthy_pod_can(
    make_service: MakeService,
) -> None:
    manager = await make_service(weights=(1, 1, 1))
    await manager.update_pod_health(KEY, 1, HealthReport(is_healthy=False, reason="503"))
    await manager.drain_pod(KEY, 0)
    await manager.drain_pod(KEY, 2)
    # Better a pod whose checks fail than no answer at all.
    assert set((await place(manager, "u", 10)).values()) == {1}
