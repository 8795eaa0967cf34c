"""Where pod health comes from: our own active checks and what Envoy reports."""
