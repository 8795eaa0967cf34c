"""Launchers for the real processes a stack needs: Redis, Envoy, the control plane, pods."""
