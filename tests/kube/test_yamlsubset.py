"""Tests for agent.yamlsubset: the values it reads. What it refuses, and how a
kubeconfig says so, is in test_kubeconfig (through load_kubeconfig)."""

from __future__ import annotations

import pytest

from agent.kube.yamlsubset import YamlSubsetError, parse_yaml_subset


def test_the_yaml_subset_values() -> None:
    document = parse_yaml_subset(
        "a:\n- x\n- 'y # not a comment'\n- - nested\n  - list\nb: []\nc: {}\nd: null\n"
        'e: "tab\\tand \\"quotes\\""\nf: plain # comment\ng:\n',
    )
    assert document == {
        "a": ["x", "y # not a comment", ["nested", "list"]],
        "b": [],
        "c": {},
        "d": None,
        "e": 'tab\tand "quotes"',
        "f": "plain",
        "g": None,
    }
    assert parse_yaml_subset("a:\n-\nb: c\n") == {"a": [None], "b": "c"}


def test_errors_name_the_line_not_its_text() -> None:
    with pytest.raises(YamlSubsetError) as caught:
        parse_yaml_subset("a: b\ntoken: s3cr3t: x\n")
    assert (caught.value.line, str(caught.value)) == (
        2,
        "line 2: a plain value containing ': ' (quote it)",
    )
    with pytest.raises(YamlSubsetError) as caught:
        parse_yaml_subset("# nothing\n")
    assert (caught.value.line, str(caught.value)) == (None, "empty")
