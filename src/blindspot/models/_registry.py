"""Model registry: ``register_model`` (decorator), ``create_model`` and ``list_models``.

A registered factory is a class or function whose options are all explicit keyword arguments
(no ``*args``/``**kwargs``), so that ``create_model`` can check the options against the signature
before calling and name the accepted ones when a caller makes a typo.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from blindspot.errors import BlindspotError

__all__ = ["create_model", "list_models", "model_options", "register_model"]

F = TypeVar("F", bound=Callable[..., Any])

_MODELS: dict[str, Callable[..., Any]] = {}


def _parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    return list(inspect.signature(factory).parameters.values())


def register_model(name: str) -> Callable[[F], F]:
    """Decorator registering a model class or factory under ``name`` (which must be new).

    The factory's parameters must all be nameable keywords (no ``*args``, ``**kwargs`` or
    positional-only parameters). A class gets ``name`` as its ``name`` attribute (the ``"name"`` of
    its config) unless it defines one, which must then be the same.
    """
    if not isinstance(name, str) or not name.strip():
        raise BlindspotError(f"model name must be a non-empty string; got {name!r}.")

    def decorator(factory: F) -> F:
        if name in _MODELS:
            raise BlindspotError(f"model name {name!r} is already registered.")
        for p in _parameters(factory):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
                raise BlindspotError(
                    f"cannot register model {name!r}: parameter {p.name!r} is not an explicit "
                    "keyword argument."
                )
        if isinstance(factory, type):
            declared = vars(factory).get("name")
            if declared is None:
                factory.name = name  # type: ignore[attr-defined]  # the "name" of its config
            elif declared != name:
                raise BlindspotError(
                    f"cannot register model {name!r}: its class declares name {declared!r}."
                )
        _MODELS[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _lookup(name: str) -> Callable[..., Any]:
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        pass
    known = list_models()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise BlindspotError(f"unknown model {name!r}; registered: {', '.join(known)}{hint}")


def model_options(name: str) -> dict[str, Any]:
    """The options model ``name`` accepts, in signature order, mapped to their defaults.

    An option without a default maps to ``inspect.Parameter.empty``.
    """
    return {p.name: p.default for p in _parameters(_lookup(name))}


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the model registered as ``name`` with the given options.

    ``create_model(**model.config)`` rebuilds a model from its config. An unknown name or an
    option the model does not take raises a BlindspotError listing what is accepted.
    """
    factory = _lookup(name)
    accepted = [p.name for p in _parameters(factory)]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        bad = ", ".join(repr(k) for k in unknown)
        noun = "option" if len(unknown) == 1 else "options"
        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close and len(unknown) == 1 else ""
        raise BlindspotError(
            f"model {name!r} has no {noun} {bad}{hint}; accepted options: {', '.join(accepted)}."
        )
    return factory(**kwargs)
