"""The public requests (schemas.py): a JSON body's values are taken as the types they are sent as, NaN or Infinity
is refused as no finite number, and many unknown fields cost one bounded error. Forms, whose fields are text, are
checked in test_compat.py."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError

from schemas import CritiqueRequest, GenerateRequest, TransformRequest

PUBLIC_REQUESTS: list[type[BaseModel]] = [GenerateRequest, TransformRequest, CritiqueRequest]
REQUIRED = {
    GenerateRequest: {"prompt": "x"},
    TransformRequest: {"prompt": "x", "audio": "clip.wav"},
    CritiqueRequest: {},
}


def errors_of(model: type[BaseModel], field: str, raw: str) -> dict[str, str]:
    """The model's required fields and `field` set to the JSON text `raw`, validated: each field at fault -> its
    message."""
    fields = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in REQUIRED[model].items()] + [f'"{field}": {raw}']
    with pytest.raises(ValidationError) as refused:
        model.model_validate_json("{" + ", ".join(fields) + "}")
    return {".".join(map(str, e["loc"])): e["msg"] for e in refused.value.errors()}


@pytest.mark.parametrize(
    ("model", "field", "value", "message"),
    [
        (GenerateRequest, "duration", "true", "valid number"),
        (GenerateRequest, "duration", '"5"', "valid number"),
        (GenerateRequest, "steps", "3.0", "valid integer"),
        (GenerateRequest, "seed", '"7"', "valid integer"),
        (GenerateRequest, "prompt", "808", "valid string"),
        (TransformRequest, "strength", '"0.5"', "valid number"),
        (CritiqueRequest, "do_sample", "1", "valid boolean"),
        (CritiqueRequest, "max_new_tokens", "true", "valid integer"),
    ],
)
def test_a_json_value_of_another_type_is_refused_not_coerced(
    model: type[BaseModel], field: str, value: str, message: str
) -> None:
    assert message in errors_of(model, field, value)[field]


def float_fields() -> list[tuple[type[BaseModel], str]]:
    return [
        (model, name) for model in PUBLIC_REQUESTS for name, f in model.model_fields.items() if f.annotation is float
    ]


@pytest.mark.parametrize(("model", "field"), float_fields())
@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinity_are_refused_as_no_finite_number(model: type[BaseModel], field: str, value: str) -> None:
    assert errors_of(model, field, value)[field] == "Input should be a finite number"


def test_every_public_request_has_float_fields_checked_and_json_numbers_still_pass() -> None:
    assert {model for model, _ in float_fields()} == set(PUBLIC_REQUESTS)
    request = GenerateRequest.model_validate_json('{"prompt": "x", "duration": 5, "steps": 3, "scheduler": "ddim"}')
    assert (request.duration, request.steps, request.scheduler.value) == (5.0, 3, "ddim")


def test_many_unknown_fields_are_refused_naming_the_first_five_and_counting_the_rest() -> None:
    body = {"prompt": "x", "duration": "long", **{f"field{i}": 0 for i in range(80_000)}}
    with pytest.raises(ValidationError) as refused:
        GenerateRequest.model_validate_json(json.dumps(body))
    errors = refused.value.errors()
    assert [e["loc"] for e in errors] == [(f"field{i}",) for i in range(5)] + [()]
    assert {e["type"] for e in errors} == {"extra_forbidden"}
    assert errors[-1]["msg"] == "and 79995 more unknown field(s), not named"


def test_a_few_unknown_fields_are_each_named_with_the_other_fields_errors() -> None:
    body = {"prompt": "x", "duration": "long", **{f"field{i}": 0 for i in range(5)}}
    with pytest.raises(ValidationError) as refused:
        GenerateRequest.model_validate_json(json.dumps(body))
    assert {e["loc"] for e in refused.value.errors()} == {("duration",)} | {(f"field{i}",) for i in range(5)}
