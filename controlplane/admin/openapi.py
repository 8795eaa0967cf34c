"""The admin API described three ways, all from ``routes.OPERATIONS`` and the pydantic models:
an OpenAPI 3.1 document (/openapi.json), a small HTML page (/docs) and Markdown (docs/api.md).

Regenerate the Markdown with ``python -m controlplane.admin > docs/api.md``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from controlplane.admin.auth import Access
from controlplane.admin.errors import ErrorBody
from controlplane.admin.models import AdminPodIndex
from controlplane.admin.routes import JSON, OPERATIONS, Operation
from controlplane.domain.models import Namespace, ServiceName, Uid

Schema = dict[str, Any]
# (model, mode) -> its schema, a $ref into components/schemas.
Refs = Mapping[tuple[Any, JsonSchemaMode], Schema]

TITLE = "stateful-route admin API"
VERSION = "1"
_REF = "#/components/schemas/{model}"

INTRO = """\
Manage the services and pods of a stateful-route control plane, see and move the users bound \
to pods, and ask which pod serves a user.

**Authentication.** When the server has a token, every mutation (each non-GET operation) needs \
`Authorization: Bearer <token>`; without it, or with a wrong one, the answer is 401 with a \
`WWW-Authenticate` challenge. Reads are open unless the server protects reads too. `/healthz`, \
`/openapi.json`, `/docs` and the dashboard page `/` are always open.

**Errors.** Every error is JSON: `{"error": "<code>", "detail": "<message or list of \
issues>", "context": {...}}`. 400: malformed JSON or a bad name, uid, pod index or query \
parameter; 401: missing or wrong token; 404: unknown service or pod, an unbound user, or no lease; \
409: the state forbids it; 413: body larger than the server's limit; 422: JSON of the wrong \
shape; 429: the service binds no new user now (at a limit of its `new_users` settings); 503: \
Redis unreachable, or no pod takes new users.
"""

PATH_PARAMETERS: dict[str, tuple[str, Schema]] = {
    "namespace": ("The service's namespace.", TypeAdapter(Namespace).json_schema()),
    "service": ("The service's name.", TypeAdapter(ServiceName).json_schema()),
    "index": ("The pod's index.", TypeAdapter(AdminPodIndex).json_schema()),
    "uid": (
        "The user id (visible ASCII; percent-encode '/', '?', '#' and '%').",
        TypeAdapter(Uid).json_schema(),
    ),
}

ERROR_MEANINGS = {
    400: "Malformed JSON, or a bad name, uid, pod index or query parameter.",
    401: "Missing or wrong bearer token.",
    404: "Unknown service or pod, the user is not bound, or the pod holds no lease.",
    409: "The current state forbids it.",
    413: "The body is larger than the server accepts.",
    422: "The JSON body has the wrong shape.",
    429: "The user is unbound and its service binds no new user now (`new_users` limits).",
    503: "Redis is unreachable, or no pod takes new users.",
}


def build_openapi() -> Schema:
    """The OpenAPI 3.1 document of the admin API."""
    refs, defs = _schemas()
    paths: dict[str, dict[str, Schema]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION, "description": INTRO},
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def openapi_json() -> bytes:
    return json.dumps(build_openapi(), indent=2).encode()


def _schemas() -> tuple[Refs, Schema]:
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorBody, "serialization")]
    for op in OPERATIONS:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if isinstance(op.response, type):
            wanted.append((op.response, "serialization"))
    refs, top = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF)
    defs: Schema = top.get("$defs", {})
    return refs, defs


def _operation(op: Operation, refs: Refs) -> Schema:
    out: Schema = {
        "operationId": op.handler.__name__,
        "summary": op.summary,
        "tags": [op.tag],
        "x-access": op.access.value,
        "security": _security(op.access),
    }
    if op.description:
        out["description"] = op.description
    parameters = [_path_parameter(name) for name in _path_names(op.path)]
    parameters += [
        {"name": q.name, "in": "query", "required": False, "description": q.description,
         "schema": q.schema}
        for q in op.query
    ]  # fmt: skip
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": not op.body_optional,
            "content": {JSON: {"schema": refs[(op.body, "validation")]}},
        }
    out["responses"] = _responses(op, refs)
    return out


def _responses(op: Operation, refs: Refs) -> Schema:
    responses: Schema = {}
    success: Schema = {"description": op.summary}
    if isinstance(op.response, type):
        schema = refs[(op.response, "serialization")]
        schema = {"type": "array", "items": schema} if op.many else schema
        success["content"] = {JSON: {"schema": schema}}
    elif op.response is not None:
        media, raw = op.response
        success["content"] = {media: {"schema": raw}}
    else:
        success["description"] = "Done; no body."
    responses[str(op.status)] = success
    for status in op.also:
        responses[str(status)] = {**success, "description": "See the operation's description."}
    error = {JSON: {"schema": refs[(ErrorBody, "serialization")]}}
    for status in _error_statuses(op):
        responses[str(status)] = {"description": ERROR_MEANINGS[status], "content": error}
    return responses


def _error_statuses(op: Operation) -> list[int]:
    statuses = set(op.errors)
    if op.access is not Access.OPEN:
        statuses.add(401)
    if _path_names(op.path) or op.query:
        statuses.add(400)
    if op.body is not None:
        statuses |= {400, 413, 422}
    return sorted(statuses - set(op.also))


def _security(access: Access) -> list[dict[str, list[str]]]:
    if access is Access.WRITE:
        return [{"bearer": []}]
    if access in (Access.READ, Access.USER_READ):
        return [{}, {"bearer": []}]  # a token is needed only when such reads are protected
    return []


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _path_parameter(name: str) -> Schema:
    description, schema = PATH_PARAMETERS[name]
    return {
        "name": name, "in": "path", "required": True, "description": description,
        "schema": schema,
    }  # fmt: skip


# -- Markdown and HTML -----------------------------------------------------------------------

_ACCESS_NOTE = {
    "open": "open (never needs the token)",
    "read": "read (needs the token only when reads are protected)",
    "user_read": "read of user ids (needs the read token or the token when reads are protected, "
    "or user reads are: by default when the API listens beyond loopback)",
    "write": "write (needs the token when one is configured)",
}


def render_markdown(doc: Schema) -> str:
    """docs/api.md: the document as a reference a person reads."""
    lines = [
        f"# {doc['info']['title']}",
        "",
        "<!-- Generated by `python -m controlplane.admin > docs/api.md`; do not edit by hand. -->",
        "",
        doc["info"]["description"].strip(),
        "",
        "The same description is served as OpenAPI 3.1 at `/openapi.json` and as a page at "
        "`/docs`.",
        "",
        "## Operations",
        "",
        "| Method | Path | Summary | Access |",
        "| --- | --- | --- | --- |",
    ]
    operations = list(_operations(doc))
    for method, path, op in operations:
        lines.append(f"| {method} | `{path}` | {op['summary']} | {op['x-access']} |")
    for method, path, op in operations:
        lines += ["", f"### {method} `{path}`", "", op["summary"] + "."]
        if "description" in op:
            lines += ["", op["description"]]
        lines += ["", f"Access: {_ACCESS_NOTE[op['x-access']]}."]
        if op.get("parameters"):
            lines += ["", "| Parameter | In | Type | Description |", "| --- | --- | --- | --- |"]
            lines += [
                f"| `{p['name']}` | {p['in']} | {_type(p['schema'])} | {p['description']} |"
                for p in op["parameters"]
            ]
        if "requestBody" in op:
            body = op["requestBody"]
            optional = "" if body["required"] else " (optional)"
            lines += ["", f"Body{optional}: {_type(body['content'][JSON]['schema'])}"]
        lines += ["", "| Status | Body | Meaning |", "| --- | --- | --- |"]
        for status, response in op["responses"].items():
            lines.append(f"| {status} | {_body_type(response)} | {response['description']} |")
    lines += ["", "## Schemas"]
    for name, schema in doc["components"]["schemas"].items():
        lines += ["", f"### {name}", ""]
        if "description" in schema:
            lines += [_one_line(schema["description"]), ""]
        if "enum" in schema:
            lines.append("One of: " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".")
            continue
        required = set(schema.get("required", ()))
        lines += [
            "| Field | Type | Required | Default | Rules |",
            "| --- | --- | --- | --- | --- |",
        ]
        for field, prop in schema.get("properties", {}).items():
            default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
            yes = "yes" if field in required else ""
            lines.append(f"| `{field}` | {_type(prop)} | {yes} | {default} | {_rules(prop)} |")
    return "\n".join(lines) + "\n"


def render_html(doc: Schema) -> str:
    """/docs: every operation on one static page (no scripts, no CDN)."""
    e = html.escape
    rows = []
    for method, path, op in _operations(doc):
        body = op.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema")
        statuses = ", ".join(op["responses"])
        rows.append(
            f"<tr><td><code>{e(method)}</code></td><td><code>{e(path)}</code></td>"
            f"<td>{e(op['summary'])}<br><small>{_inline(op.get('description', ''))}</small></td>"
            f"<td>{e(_type(body, link=False)) if body else ''}</td><td>{e(statuses)}</td>"
            f"<td>{e(op['x-access'])}</td></tr>"
        )
    intro = "".join(f"<p>{_inline(p)}</p>" for p in doc["info"]["description"].split("\n\n"))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(doc["info"]["title"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}}</style>
</head><body><h1>{e(doc["info"]["title"])}</h1>{intro}
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1, with every schema).
</p><table><tr><th>Method</th><th>Path</th><th>What</th><th>Body</th><th>Statuses</th>
<th>Access</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


def _inline(text: str) -> str:
    """The little Markdown our descriptions use (**bold**, `code`), as escaped HTML."""
    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def _operations(doc: Schema) -> list[tuple[str, str, Schema]]:
    return [
        (method.upper(), path, op)
        for path, methods in doc["paths"].items()
        for method, op in methods.items()
    ]


def _body_type(response: Schema) -> str:
    content = response.get("content", {})
    if not content:
        return ""
    media, spec = next(iter(content.items()))
    return _type(spec["schema"]) if media == JSON else f"`{media}`"


def _type(schema: Schema, *, link: bool = True) -> str:
    """A JSON schema as a short type name; ``link`` makes model names Markdown links."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return f"[{name}](#{name.lower()})" if link else name
    if "anyOf" in schema:
        return " or ".join(_type(option, link=link) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}), link=link)}"
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        return f"object of {_type(schema['additionalProperties'], link=link)}"
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " or ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    return str(kind)


_RULES = {
    "minimum": ">= {}", "exclusiveMinimum": "> {}", "maximum": "<= {}",
    "exclusiveMaximum": "< {}", "minLength": "length >= {}", "maxLength": "length <= {}",
    "maxItems": "at most {} items", "pattern": "matches `{}`",
}  # fmt: skip


def _rules(prop: Schema) -> str:
    options = [prop, *prop.get("anyOf", ())]
    rules = [
        template.format(option[key])
        for option in options
        for key, template in _RULES.items()
        if key in option
    ]
    return ", ".join(rules).replace("|", "\\|")


def _one_line(text: str) -> str:
    return " ".join(text.split())
