"""Parse the plain subset of YAML that kubeconfigs are written in.

kubeadm (admin.conf, kubelet.conf), RKE2 (rke2.yaml), k3s (k3s.yaml) and
kubectl write block mappings, block sequences, plain, single- and
double-quoted scalars, comments, and `{}`/`[]` as empty values; that is what
this reads, without PyYAML. Anything else (flow collections, anchors, aliases,
tags, block scalars `|`/`>`, tabs as indentation, values continued on the next
line) is an error naming the construct and the line, never a guess.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["YamlSubsetError", "parse_yaml_subset"]


class YamlSubsetError(Exception):
    """Text outside the subset: the line (None when the text as a whole is
    wrong) and the construct, never the line itself, which may hold a key."""

    def __init__(self, line: Optional[int], message: str) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.line = line
        self.message = message


# (line number, indentation, text after the indentation without trailing spaces)
_Line = Tuple[int, int, str]

_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_EMPTY_FLOW = re.compile(r"(\{\s*\}|\[\s*\])(\s+#.*)?")
_INDICATORS = {
    "&": "anchors (&)",
    "*": "aliases (*)",
    "!": "tags (!)",
    "|": "block scalars (|)",
    ">": "folded block scalars (>)",
    "{": "flow mappings ({...})",
    "[": "flow sequences ([...])",
    "?": "complex keys (?)",
    "%": "directives (%)",
    "@": "reserved indicators (@)",
    "`": "reserved indicators (`)",
}
_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "\t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def parse_yaml_subset(text: str) -> Dict[str, Any]:
    """Given YAML text in the subset kubeconfigs use, return the top-level
    mapping: nested dicts, lists, strings and None (plain scalars stay
    strings; `{}` and `[]` are empty).

    Raise YamlSubsetError naming the line and the construct when the text
    leaves the subset; the message never quotes the line, which may hold a key.
    """
    return _YamlSubset(text).document()


class _YamlSubset:
    def __init__(self, text: str) -> None:
        self.lines = self.lex(text)
        self.pos = 0

    def error(self, number: int, message: str) -> YamlSubsetError:
        return YamlSubsetError(number, message)

    def lex(self, text: str) -> List[_Line]:
        lines: List[_Line] = []
        for number, raw in enumerate(text.splitlines(), 1):
            content = raw.lstrip(" \t")
            if not content.strip() or content.startswith("#"):
                continue
            indentation = raw[: len(raw) - len(content)]
            if "\t" in indentation:
                raise self.error(number, "tabs in indentation")
            content = content.rstrip()
            if content in ("---", "..."):
                if content == "---" and not lines:
                    continue  # an explicit start of the only document
                raise self.error(number, "more than one YAML document")
            if content.startswith("%"):
                raise self.error(number, "directives (%)")
            lines.append((number, len(indentation), content))
        return lines

    def document(self) -> Dict[str, Any]:
        if not self.lines:
            raise YamlSubsetError(None, "empty")
        number, indent, text = self.lines[0]
        if _is_item(text):
            raise self.error(number, "the top level must be a mapping, not a list")
        if indent != 0:
            raise self.error(number, "the top level must not be indented")
        # Every later line is indented at least 0: mapping(0) reads them all or raises.
        return self.mapping(0)

    def block(self, indent: int) -> Any:
        return self.sequence(indent) if _is_item(self.lines[self.pos][2]) else self.mapping(indent)

    def mapping(self, indent: int) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        while self.pos < len(self.lines):
            number, line_indent, text = self.lines[self.pos]
            if line_indent < indent:
                break
            if line_indent > indent:
                raise self.error(number, "unexpected indentation (a value continued on this line?)")
            if _is_item(text):
                raise self.error(number, "a list item where a key was expected")
            key, rest = self.split_key(number, text)
            if key in result:
                raise self.error(number, f"duplicate key {key!r}")
            self.pos += 1
            result[key] = self.scalar(number, rest) if rest else self.nested(indent)
        return result

    def sequence(self, indent: int) -> List[Any]:
        result: List[Any] = []
        while self.pos < len(self.lines):
            number, line_indent, text = self.lines[self.pos]
            if line_indent < indent or not _is_item(text):
                break
            if line_indent > indent:
                raise self.error(number, "unexpected indentation")
            after_dash = text[1:]
            content = after_dash.lstrip(" ")
            if not content:
                self.pos += 1
                result.append(self.nested(indent, same_indent_list=False))
            elif _is_item(content) or self.is_key(content):
                # The item's first line: read it as a line of its own at its column.
                column = indent + 1 + len(after_dash) - len(content)
                self.lines[self.pos] = (number, column, content)
                result.append(self.block(column))
            else:
                self.pos += 1
                result.append(self.scalar(number, content))
        return result

    def nested(self, indent: int, same_indent_list: bool = True) -> Any:
        """The value of a key (or `-`) with nothing after it: a deeper block, a
        list at the key's own indentation (as kubectl writes), or null."""
        if self.pos >= len(self.lines):
            return None
        _number, line_indent, text = self.lines[self.pos]
        if line_indent > indent:
            return self.block(line_indent)
        if same_indent_list and line_indent == indent and _is_item(text):
            return self.sequence(indent)
        return None

    def is_key(self, text: str) -> bool:
        try:
            self.split_key(0, text)
        except YamlSubsetError:
            return False
        return True

    def split_key(self, number: int, text: str) -> Tuple[str, str]:
        """Split `key: value` into the key and the value text ("" when none)."""
        if text[0] in "\"'":
            key, after = self.quoted(number, text)
            if not (after == ":" or after.startswith(": ")):
                raise self.error(number, "expected `key: value`")
            rest = after[1:].strip()
        else:
            match = re.search(r":( |$)", text)
            if match is None or text[0] in _INDICATORS:
                construct = _INDICATORS.get(text[0], "a line that is not `key: value`")
                raise self.error(number, construct)
            key, rest = text[: match.start()].rstrip(), text[match.end() :].strip()
        return key, "" if rest.startswith("#") else rest

    def scalar(self, number: int, text: str) -> Any:
        if text[0] in "\"'":
            value, after = self.quoted(number, text)
            if after and not after.startswith("#"):
                raise self.error(number, "text after a quoted string")
            return value
        if _EMPTY_FLOW.fullmatch(text):
            return {} if text[0] == "{" else []
        if text[0] in _INDICATORS:
            raise self.error(number, _INDICATORS[text[0]])
        value = re.split(r"\s#", text, maxsplit=1)[0].rstrip()
        if re.search(r": |:$", value):
            raise self.error(number, "a plain value containing ': ' (quote it)")
        if _is_item(value):
            raise self.error(number, "a list item on the line of its key")
        return None if value in _NULLS else value

    def quoted(self, number: int, text: str) -> Tuple[str, str]:
        """Return a quoted scalar at the start of text and what follows it, stripped."""
        quote, chars, index = text[0], [], 1
        while index < len(text):
            char = text[index]
            if char == quote:
                if quote == "'" and text[index + 1 : index + 2] == "'":
                    chars.append("'")
                    index += 2
                    continue
                return "".join(chars), text[index + 1 :].strip()
            if char == "\\" and quote == '"':
                escaped, index = self.escape(number, text, index + 1)
                chars.append(escaped)
                continue
            chars.append(char)
            index += 1
        raise self.error(number, "a quoted string continued on the next line")

    def escape(self, number: int, text: str, index: int) -> Tuple[str, int]:
        code = text[index : index + 1]
        if code in _ESCAPES:
            return _ESCAPES[code], index + 1
        width = _HEX_ESCAPES.get(code)
        digits = text[index + 1 : index + 1 + width] if width else ""
        if width and re.fullmatch(r"[0-9a-fA-F]+", digits) and len(digits) == width:
            try:
                return chr(int(digits, 16)), index + 1 + width
            except (ValueError, OverflowError):
                pass
        raise self.error(number, "an unsupported escape in a double-quoted string")


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")
