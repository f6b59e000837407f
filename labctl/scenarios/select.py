"""`labctl test -k EXPR`: pick scenarios by keyword, like pytest's -k.

EXPR is words joined by `and`, `or`, `not` and parentheses; a word matches a scenario when it is part of
its name or equals one of its keywords (tags, axis values, topology, variant). `-k "ikev1 and not ah"`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

Matcher = Callable[[str], bool]
_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


class SelectError(ValueError):
    """The -k expression cannot be parsed."""


def _tokens(expr: str) -> list[str]:
    tokens = _TOKEN.findall(expr)
    if "".join(tokens).replace(" ", "") != expr.replace(" ", ""):
        raise SelectError(f"-k {expr!r}: cannot read it; expected words, and/or/not and parentheses")
    return tokens


class _Parser:
    def __init__(self, expr: str, match: Matcher) -> None:
        self.expr = expr
        self.tokens = _tokens(expr)
        self.pos = 0
        self.match = match

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        item = self._peek()
        if item is None:
            raise SelectError(f"-k {self.expr!r}: ends too early")
        self.pos += 1
        return item

    def parse(self) -> bool:
        value = self._or()
        if self._peek() is not None:
            raise SelectError(f"-k {self.expr!r}: unexpected {self._peek()!r}")
        return value

    def _or(self) -> bool:
        value = self._and()
        while self._peek() == "or":
            self._take()
            right = self._and()
            value = value or right
        return value

    def _and(self) -> bool:
        value = self._not()
        while self._peek() == "and":
            self._take()
            right = self._not()
            value = value and right
        return value

    def _not(self) -> bool:
        if self._peek() == "not":
            self._take()
            return not self._not()
        return self._atom()

    def _atom(self) -> bool:
        item = self._take()
        if item == "(":
            value = self._or()
            if self._take() != ")":
                raise SelectError(f"-k {self.expr!r}: a '(' is not closed")
            return value
        if item in (")", "and", "or"):
            raise SelectError(f"-k {self.expr!r}: unexpected {item!r}")
        return self.match(item)


def matches(expr: str, name: str, keywords: Iterable[str]) -> bool:
    words = set(keywords)
    return _Parser(expr, lambda word: word in name or word in words).parse()
