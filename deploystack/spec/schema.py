"""The spec's JSON Schema (`deploystack schema`), for editors and CI: what the loader accepts, shorthands
included, with `$schema` and `$id`.

pydantic describes the models as they are stored; the loader also takes a few shorter forms that a
`mode="before"` validator turns into them. Each is added here, next to the model it belongs to.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from deploystack import __version__
from deploystack.spec.models import PYTHON_VERSIONS, Stack, Toggle

DIALECT = "https://json-schema.org/draft/2020-12/schema"
# A name, not a download location: the schema is printed by the installed deploystack, for its version.
SCHEMA_ID = f"urn:deploystack:spec:{__version__}"


class _WithShorthands(GenerateJsonSchema):
    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        json_schema = super().model_schema(schema)
        if issubclass(schema["cls"], Toggle):  # `redis: true` is `redis: {enabled: true}`
            on_off = {"type": "boolean", "description": "short for {enabled: true} or {enabled: false}"}
            return {"anyOf": [on_off, json_schema]}
        return json_schema


def stack_schema() -> dict[str, Any]:
    schema = Stack.model_json_schema(schema_generator=_WithShorthands)
    python = schema["$defs"]["App"]["properties"]["python"]
    # `python: 3.13` unquoted is a YAML number; the loader reads it as the text "3.13".
    as_number = {"type": "number", "enum": [float(version) for version in PYTHON_VERSIONS]}
    choices = {key: python.pop(key) for key in ("type", "enum")}
    python["anyOf"] = [choices, as_number]
    return {"$schema": DIALECT, "$id": SCHEMA_ID, **schema}
