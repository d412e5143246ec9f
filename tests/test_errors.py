"""One error tree (issue 11): every error the product raises on purpose joins ``TreadError``, and the
tree drawn in ``drivers/errors.py`` names each one, so the command line can catch the root alone."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import retrotread.api
import retrotread.daemon
import retrotread.drivers
import retrotread.safety
import retrotread.sims
from retrotread.drivers import errors
from retrotread.drivers.errors import TreadError

# Not product errors: signals inside one transport that never leave it (HTTP answers raised inside a
# route, an MQTT refusal turned into a cmd/result, a simulated peripheral's ATT errors).
TRANSPORT_INTERNAL = {"RefusedError", "BodyTooLarge", "BodyTooSlow", "Refused", "AttError", "NotAdvertising"}


def product_errors() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in (retrotread.api, retrotread.daemon, retrotread.drivers, retrotread.safety, retrotread.sims):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith(".gpio.driver"):
                continue  # needs gpiozero, an optional extra; its errors are the drivers' own tree
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found[obj.__qualname__] = obj
    return sorted(found.values(), key=lambda c: c.__qualname__)


ERRORS = [c for c in product_errors() if c.__name__ not in TRANSPORT_INTERNAL]


def test_the_tree_has_the_errors_it_draws() -> None:
    assert len(ERRORS) > 20  # the walk really found the modules


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__qualname__)
def test_every_product_error_joins_the_tree(cls: type[BaseException]) -> None:
    assert issubclass(cls, TreadError), f"{cls.__module__}.{cls.__qualname__} is outside the error tree"


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__qualname__)
def test_the_docstring_draws_every_error_a_face_may_see(cls: type[BaseException]) -> None:
    # The codecs' own subclasses are drawn under their parent's line; every other error by name.
    if issubclass(cls, errors.CodecError) and cls.__module__ != errors.__name__:
        return
    assert cls.__name__ in (errors.__doc__ or ""), f"draw {cls.__name__} in drivers/errors.py's tree"
