"""Build a contract model from values that are already valid, without running its validators.

The authorizer builds a couple of dozen small models per decision from its own integers (cap
statuses and their amounts); pydantic's `model_construct` loops over fields in Python and costs
more than validating. This sets the same four attributes `model_construct` sets, directly. Only
for values that provably pass the model's rules; `tests/unit/test_money.py` checks the result
equals, hashes and serializes like a validated model.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

Model = TypeVar("Model", bound=BaseModel)


def trusted(model: type[Model], values: dict[str, Any]) -> Model:
    """An instance of `model` holding `values` (every field, already valid) as they are."""
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance
