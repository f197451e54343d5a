"""The pipeline schema in the forms its readers want.

The published schema writes a value of several types as `anyOf`, one branch per type with the
keywords of that type (Ajv's strict mode rejects `type: [a, b]` lists), and `runner validate`
checks against the same schema with those branches folded back into one `type` list, so a wrong
type is one message naming every type allowed (`split_types` and `fold_types` are inverses).
`with_plugins` adds every installed plugin's `with` schema, for editors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

# The keywords that apply to one type only (Ajv's strict mode wants them next to that type).
_TYPE_KEYWORDS = {
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
    "object": {
        "properties",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "required",
        "minProperties",
        "maxProperties",
    },
    "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"},
}
_TYPE_KEYWORDS["integer"] = _TYPE_KEYWORDS["number"]
PLUGIN_IDS = "plugins/"  # resolved against the schema's own `$id`


def _type_branches(node: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """The branches of `anyOf: [{type: A, ...}, {type: B, ...}]` with only keywords of their
    own type, distinct types and no keyword twice; None for any other node."""
    branches = node.get("anyOf")
    if "type" in node or not isinstance(branches, list) or len(branches) < 2:
        return None
    seen: set[str] = set()
    for branch in branches:
        kind = branch.get("type") if isinstance(branch, dict) else None
        if not isinstance(kind, str) or kind in seen:
            return None
        keys = set(branch) - {"type"}
        if not keys <= _TYPE_KEYWORDS.get(kind, set()) or keys & (seen | set(node)):
            return None
        seen |= keys | {kind}
    return branches


def fold_types(node: Any) -> Any:
    """`{anyOf: [{type: string, minLength: 1}, {type: array, items: X}]}` ->
    `{type: [string, array], minLength: 1, items: X}`, everywhere in a schema."""
    if isinstance(node, list):
        return [fold_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    branches = _type_branches(node)
    if branches is None:
        return {key: fold_types(value) for key, value in node.items()}
    out = {key: fold_types(value) for key, value in node.items() if key != "anyOf"}
    out["type"] = [branch["type"] for branch in branches]
    for branch in branches:
        out.update({k: fold_types(v) for k, v in branch.items() if k != "type"})
    return out


def split_types(node: Any) -> Any:
    """The inverse of `fold_types`: a `type` list becomes an `anyOf` of one branch per type,
    each with the keywords of its type; the other keywords stay where they are."""
    if isinstance(node, list):
        return [split_types(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: split_types(value) for key, value in node.items()}
    kinds = node.get("type")
    if not isinstance(kinds, list):
        return node
    typed = set().union(*(_TYPE_KEYWORDS.get(kind, set()) for kind in kinds))
    out = {key: value for key, value in node.items() if key not in typed and key != "type"}
    out["anyOf"] = [
        {"type": kind, **{k: v for k, v in node.items() if k in _TYPE_KEYWORDS.get(kind, ())}}
        for kind in kinds
    ]
    return out


def _embedded(name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """A plugin's `with` schema as a resource of its own: its `#/...` references stay its own."""
    out = {k: v for k, v in split_types(dict(schema)).items() if k not in ("$schema", "$id")}
    return {"$id": PLUGIN_IDS + quote(name, safe="") + ".json", **out}


def _chosen_by_uses(names: list[str]) -> list[dict[str, Any]]:
    """`with` follows the schema of the plugin named in `uses`: one if/then per plugin."""
    return [
        {
            "if": {"properties": {"uses": {"const": name}}, "required": ["uses"]},
            "then": {"properties": {"with": {"$ref": f"#/$defs/plugin_{name}"}}},
        }
        for name in names
    ]


def with_plugins(schema: Mapping[str, Any], plugins: Mapping[str, Mapping[str, Any]]) -> Any:
    """The pipeline schema with each plugin's `with` schema, chosen by the `uses` of a step or
    of its `compensate`, and the rule that a step has exactly one of `uses` and `template`."""
    names = list(plugins)
    defs = dict(schema["$defs"])
    step = dict(defs["step"])
    step["oneOf"] = [{"properties": {k: {}}, "required": [k]} for k in ("uses", "template")]
    step["allOf"] = _chosen_by_uses(names)
    properties = dict(step["properties"])
    properties["uses"] = {**properties["uses"], "examples": names}
    properties["compensate"] = {**properties["compensate"], "allOf": _chosen_by_uses(names)}
    step["properties"] = properties
    defs["step"] = step
    defs.update({f"plugin_{name}": _embedded(name, s) for name, s in plugins.items()})
    return {**schema, "$defs": defs}
