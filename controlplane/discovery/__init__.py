"""Where pods are: their DNS names resolved and re-resolved, and the leases of pods that
register themselves."""
