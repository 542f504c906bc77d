from dataclasses import dataclass

import pytest

from adaptertune import BACKBONES, DATASETS, METHODS, UnknownNameError
from adaptertune.registry import Registry


@dataclass(frozen=True)
class Item:
    name: str
    description: str = ""


def test_register_get_list_filter():
    r = Registry("thing")
    r.register(Item("vit_a"))
    r.register(Item("vit_b"))
    r.register(Item("deit"))
    assert r.names() == ["deit", "vit_a", "vit_b"]
    assert [i.name for i in r.list("vit_*")] == ["vit_a", "vit_b"]
    assert r.get("deit").name == "deit" and "deit" in r and len(r) == 3


def test_duplicate_is_error():
    r = Registry("thing")
    r.register(Item("a"))
    with pytest.raises(KeyError, match="already a thing called 'a'"):
        r.register(Item("a"))


def test_unknown_suggests_and_lists():
    with pytest.raises(
        UnknownNameError, match="Unknown method 'adaptr'. Did you mean 'adapter'.*Valid methods: adapter"
    ):
        METHODS.get("adaptr")
    assert isinstance(UnknownNameError("x"), KeyError)


def test_builtin_registries_are_filled():
    assert {"head", "full", "adapter"} <= set(METHODS.names())
    assert {"deit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "test_vit"} <= set(
        BACKBONES.names()
    )
    assert "imagefolder" in DATASETS
