"""stateful-route: an Envoy control plane that keeps each user on the pod holding its state."""

__version__ = "0.1.0"
