"""``python -m controlplane.admin > docs/api.md``: print the admin API reference (Markdown)."""

from controlplane.admin.openapi import build_openapi, render_markdown

print(render_markdown(build_openapi()), end="")
