"""Renders the Go text/template subset that `bacalhau job run -V/-E` applies to raw spec text."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import InvalidSpec, Problem

_SPACE = " \t\r\n"
_FUNCS = ("index", "or")
_KEYWORDS = frozenset(
    ("if", "else", "end", "range", "with", "define", "template", "block", "break", "continue")
) | {"nil", "true", "false"}
_MAX_DEPTH = 50
_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
_HEX = frozenset("0123456789abcdefABCDEF")


class _Fail(Exception):
    """A problem inside one action; turned into a `Problem` located at its `{{`."""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # space | dot | field | ident | str | ( | ) | | | end
    value: str = ""


@dataclass(frozen=True, slots=True)
class _Lit:
    value: str


@dataclass(frozen=True, slots=True)
class _Dot:
    pass


@dataclass(frozen=True, slots=True)
class _Func:
    name: str


@dataclass(frozen=True, slots=True)
class _Chain:
    base: _Node
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Pipe:
    cmds: tuple[tuple[_Node, ...], ...]


_Node = _Lit | _Dot | _Func | _Chain | _Pipe
_Value = str | Mapping[str, str]  # what an expression evaluates to


def _is_space(text: str, i: int) -> bool:
    return i < len(text) and text[i] in _SPACE


def _is_digit(c: str) -> bool:
    return len(c) == 1 and "0" <= c <= "9"


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalpha() or c.isdecimal()


def _at_right_delim(text: str, i: int) -> bool:
    return text.startswith("}}", i) or (_is_space(text, i) and text.startswith("-}}", i + 1))


def _word_end(text: str, start: int, i: int) -> int:
    """End of the alphanumeric run at `i`; it must be followed by a terminator, as in Go."""
    while i < len(text) and _is_alnum(text[i]):
        i += 1
    if i < len(text) and text[i] not in _SPACE + ".,|:()" and not text.startswith("}}", i):
        hint = "; a trim marker needs a space before it: ' -}}'" if text[i] == "-" else ""
        raise _Fail(f"bad character {text[i]!r} after {text[start:i]!r}{hint}")
    return i


def _unquote(body: str) -> str:
    """Decode the body of a Go interpreted string ("...") like strconv.Unquote."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        i += 1
        if c != "\\":
            out += c.encode("utf-8", "surrogatepass")
            continue
        e = body[i]  # the lexer guarantees a character after every backslash
        if e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 1
            continue
        octal = e in "01234567"
        size = 3 if octal else {"x": 2, "u": 4, "U": 8}.get(e, 0)
        digits = body[i : i + size] if octal else body[i + 1 : i + 1 + size]
        valid = set(digits) <= (set("01234567") if octal else _HEX)
        if not size or len(digits) != size or not valid:
            raise _Fail(f"invalid escape \\{e}{digits} in string; write \\\\ for a backslash")
        code = int(digits, 8 if octal else 16)
        i += size if octal else size + 1
        if e in "x01234567" and code < 256:
            out.append(code)
        elif e in "uU" and code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
            out += chr(code).encode()
        else:
            raise _Fail(f"escape \\{e}{digits} is out of range")
    return out.decode("utf-8", "replace")


def _lex_action(text: str, i: int) -> tuple[list[_Tok], int, bool]:
    """Tokens of the action starting at `i`, the offset after its `}}`, and its right trim."""
    toks: list[_Tok] = []
    depth = 0
    n = len(text)
    while True:
        if _at_right_delim(text, i):
            if depth:
                raise _Fail("unclosed '(' in action; add the missing ')'")
            trim = not text.startswith("}}", i)
            toks.append(_Tok("end"))
            return toks, i + (4 if trim else 2), trim
        if i >= n:
            raise _Fail("unclosed action: this '{{' has no matching '}}'")
        c = text[i]
        nxt = text[i + 1 : i + 2]
        if c in _SPACE:
            j = i
            while _is_space(text, j) and not _at_right_delim(text, j):
                j += 1
            toks.append(_Tok("space"))
            i = j
        elif c == "." and not _is_digit(nxt):
            j = _word_end(text, i, i + 1)
            toks.append(_Tok("field", text[i + 1 : j]) if j > i + 1 else _Tok("dot"))
            i = j
        elif _is_digit(c) or (c in "+-." and _is_digit(nxt)):
            raise _Fail('numbers are not supported in Shoal templates; quote the value: "3"')
        elif c.isalpha() or c == "_":
            j = _word_end(text, i, i)
            word = text[i:j]
            if word in _KEYWORDS:
                raise _Fail(f"{word!r} is not supported in Shoal templates (only .name, index, or)")
            toks.append(_Tok("ident", word))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] not in '"\n':
                j += 2 if text[j] == "\\" and text[j + 1 : j + 2] not in ("", "\n") else 1
            if j >= n or text[j] != '"':
                raise _Fail('unterminated quoted string; close it with " on the same line')
            toks.append(_Tok("str", _unquote(text[i + 1 : j])))
            i = j + 1
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise _Fail("unterminated raw string; close it with `")
            toks.append(_Tok("str", text[i + 1 : j].replace("\r", "")))
            i = j + 1
        elif c in "()|":
            depth += {"(": 1, ")": -1, "|": 0}[c]
            if depth < 0:
                raise _Fail("unexpected ')' without a matching '('")
            if depth > _MAX_DEPTH:
                raise _Fail(f"parentheses nested deeper than {_MAX_DEPTH}")
            toks.append(_Tok(c))
            i += 1
        elif c == "-":
            raise _Fail("unexpected '-'; trim markers are written '{{- ' and ' -}}' with a space")
        elif c == "$":
            raise _Fail("template variables ($x) are not supported; use .name or index")
        else:
            raise _Fail(f"unexpected character {c!r} in action")


class _Parser:
    def __init__(self, toks: list[_Tok]) -> None:
        self.toks = toks
        self.i = 0

    def _peek(self) -> _Tok:
        return self.toks[min(self.i, len(self.toks) - 1)]

    def _next(self) -> _Tok:
        tok = self._peek()
        self.i += 1
        return tok

    def pipeline(self, closer: str) -> _Pipe:
        cmds: list[tuple[_Node, ...]] = []
        while True:
            cmds.append(self._command("after '|'" if cmds else f"before {closer}"))
            if self._next().kind != "|":
                return _Pipe(tuple(cmds))

    def _command(self, where: str) -> tuple[_Node, ...]:
        ops: list[_Node] = []
        while True:
            while self._peek().kind == "space":
                self.i += 1
            if self._peek().kind in ("end", ")", "|"):
                break
            ops.append(self._operand())
            kind = self._peek().kind
            if kind not in ("space", "end", ")", "|"):
                what = {"str": "string", "dot": "'.'", "ident": "function"}.get(kind, repr(kind))
                raise _Fail(f"unexpected {what} after {_show(ops[-1])}; separate them by a space")
        if not ops:
            raise _Fail(f"missing expression {where}; write e.g. {{{{.name}}}}")
        return tuple(ops)

    def _operand(self) -> _Node:
        tok = self._next()
        node: _Node
        if tok.kind == "dot":
            node = _Dot()
        elif tok.kind == "field":
            node = _Chain(_Dot(), (tok.value,))
        elif tok.kind == "str":
            node = _Lit(tok.value)
        elif tok.kind == "(":
            node = self.pipeline("')'")
        elif tok.value in _FUNCS:
            node = _Func(tok.value)
        else:
            raise _Fail(f"unknown function {tok.value!r}; only 'index' and 'or' are supported")
        names: list[str] = []
        while self._peek().kind == "field":
            names.append(self._next().value)
        if not names:
            return node
        if isinstance(node, _Pipe):
            return _Chain(node, tuple(names))
        if isinstance(node, _Chain):
            return _Chain(node.base, node.names + tuple(names))
        raise _Fail(f"unexpected .{names[0]} after {_show(node)}")


def _show(node: _Node) -> str:
    if isinstance(node, _Lit):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, _Func):
        return node.name
    if isinstance(node, _Chain):
        return ("" if isinstance(node.base, _Dot) else "(...)") + "." + ".".join(node.names)
    return "." if isinstance(node, _Dot) else "(...)"


def _format(value: _Value) -> str:
    if isinstance(value, str):
        return value
    return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"


class _Eval:
    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = data
        self.missing: list[str] = []

    def pipe(self, pipe: _Pipe) -> _Value:
        value: _Value | None = None
        for cmd in pipe.cmds:
            value = self._command(cmd, value)
        assert value is not None  # a pipeline has at least one command
        return value

    def _command(self, ops: tuple[_Node, ...], final: _Value | None) -> _Value:
        if isinstance(ops[0], _Func):
            return self._call(ops[0].name, ops[1:], final)
        if final is not None:
            raise _Fail(f"cannot pipe into {_show(ops[0])}: only index and or take a piped value")
        if len(ops) > 1:
            raise _Fail(f"{_show(ops[0])} is not a function and cannot take arguments")
        return self._arg(ops[0])

    def _arg(self, node: _Node) -> _Value:
        if isinstance(node, _Lit):
            return node.value
        if isinstance(node, _Dot):
            return self.data
        if isinstance(node, _Func):
            return self._call(node.name, (), None)
        if isinstance(node, _Pipe):
            return self.pipe(node)
        value = self._arg(node.base)
        for name in node.names:
            if isinstance(value, str):
                raise _Fail(f"can't evaluate field {name} of a string value")
            if name not in value:
                self.missing.append(
                    f'template variable "{name}" is not set; pass it with -V {name}=VALUE or -E'
                )
                return ""
            value = value[name]
        return value

    def _call(self, name: str, args: tuple[_Node, ...], final: _Value | None) -> _Value:
        count = len(args) + (final is not None)
        if not count:
            raise _Fail(f'{name} needs at least 1 argument, e.g. {name} . "key"')
        if name == "or":
            value: _Value = ""
            for arg in args:
                value = self._arg(arg)
                if value:
                    return value
            return value if final is None else final
        values = [self._arg(arg) for arg in args] + ([] if final is None else [final])
        item = values[0]
        for key in values[1:]:
            if isinstance(item, str):
                raise _Fail(f"index: cannot index a string value with {_format(key)!r}")
            if not isinstance(key, str):
                raise _Fail("index: the key must be a string, not a map")
            item = item.get(key, "")
        return item


def _where(text: str, pos: int) -> str:
    line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
    return f"line {line}, column {column}"


def _skip_comment(text: str, i: int) -> tuple[int, bool]:
    close = text.find("*/", i + 2)
    if close < 0:
        raise _Fail("unclosed comment: '/*' has no matching '*/'")
    if text.startswith("}}", close + 2):
        return close + 4, False
    if _is_space(text, close + 2) and text.startswith("-}}", close + 3):
        return close + 6, True
    raise _Fail("comment ends before the closing delimiter; write '*/}}' with nothing between")


def render(text: str, variables: Mapping[str, str], *, source: str = "") -> str:
    """Render `text` like Go text/template with missingkey=error over a map[string]string."""
    if "{{" not in text:
        return text
    data = dict(variables)
    out: list[str] = []
    problems: dict[Problem, None] = {}  # ordered and de-duplicated
    pos, trim_next = 0, False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        chunk = chunk.lstrip(_SPACE) if trim_next else chunk
        left_trim = start >= 0 and text.startswith("-", start + 2) and _is_space(text, start + 3)
        out.append(chunk.rstrip(_SPACE) if left_trim else chunk)
        if start < 0:
            break
        inner = start + (4 if left_trim else 2)
        try:
            if text.startswith("/*", inner):
                pos, trim_next = _skip_comment(text, inner)
                continue
            toks, pos, trim_next = _lex_action(text, inner)
        except _Fail as exc:
            problems[Problem(_where(text, start), str(exc))] = None
            close = text.find("}}", start + 2)
            if close < 0:
                break
            pos, trim_next = close + 2, False
            continue
        evaluator = _Eval(data)
        try:
            out.append(_format(evaluator.pipe(_Parser(toks).pipeline("'}}'"))))
        except _Fail as exc:
            problems[Problem(_where(text, start), str(exc))] = None
        for message in evaluator.missing:
            problems[Problem(_where(text, start), message)] = None
    if problems:
        raise InvalidSpec(list(problems), source=source)
    return "".join(out)


def variables_from(
    pairs: Sequence[str] = (),
    env_regex: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Template data from `-V KEY=VALUE` pairs plus environment variables matched by `-E REGEX`.

    The regex uses search semantics (like Go's MatchString); None or "" selects no environment
    variables.  A `-V` pair wins over an environment variable of the same name; later pairs win.
    """
    result: dict[str, str] = {}
    problems: list[Problem] = []
    if env_regex:
        try:
            pattern = re.compile(env_regex)
        except re.error as exc:
            problems.append(Problem(f'-E "{env_regex}"', f"not a valid regular expression: {exc}"))
        else:
            env = os.environ if environ is None else environ
            result.update((k, v) for k, v in env.items() if pattern.search(k))
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            problems.append(Problem(f'-V "{pair}"', "expected KEY=VALUE, e.g. -V query=hello"))
        else:
            result[key] = value
    if problems:
        raise InvalidSpec(problems)
    return result
