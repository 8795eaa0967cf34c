"""The admin HTTP API: services, pods, users, routing, health, metrics and its own docs."""

from controlplane.admin.app import create_admin_app
from controlplane.admin.auth import Access
from controlplane.admin.config import AdminSettings
from controlplane.admin.handlers import CONTEXT, AdminContext, EnvoysView
from controlplane.admin.metrics import AdminMetrics

__all__ = [
    "CONTEXT",
    "Access",
    "AdminContext",
    "AdminMetrics",
    "AdminSettings",
    "EnvoysView",
    "create_admin_app",
]
