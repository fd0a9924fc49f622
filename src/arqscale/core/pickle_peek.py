"""Read the plain-data skeleton of a pickle without unpickling it.

arq pickles job payloads and results. Unpickling runs code chosen by whoever wrote the bytes, so the
API and the CLI never do it. They still want a pickled job's function name, timestamps and success
flag, which arq stores as plain strings, ints and bools in a top-level dict. ``peek`` walks the
opcode stream with ``pickletools.genops`` (a parser: it constructs nothing and imports nothing) and
rebuilds only literals and built-in containers; every object construction becomes ``OPAQUE``.
"""

from __future__ import annotations

import pickletools
from typing import Any


class _Opaque:
    """Stands for anything the pickle would have built by calling code."""

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()
_MARK = object()

_LITERALS = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "SHORT_BINSTRING",
    "BINSTRING",
    "STRING",
    "SHORT_BINBYTES",
    "BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
    "BININT",
    "BININT1",
    "BININT2",
    "INT",
    "LONG",
    "LONG1",
    "LONG4",
    "BINFLOAT",
    "FLOAT",
}
_CONSTANTS: dict[str, Any] = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_IGNORED = {"PROTO", "FRAME", "POP_MARK"}
# Opcodes that build an object from N stack items by calling code: pop them, push OPAQUE.
_CALLS = {"REDUCE": 2, "NEWOBJ": 2, "NEWOBJ_EX": 3, "STACK_GLOBAL": 2, "GLOBAL": 0, "EXT1": 0, "EXT2": 0, "EXT4": 0}


class PeekError(ValueError):
    """The bytes are not a pickle this reader understands."""


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise PeekError("MARK expected")


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        return OPAQUE
    return key


def _step(name: str, arg: Any, stack: list[Any], memo: dict[int, Any]) -> None:  # noqa: C901 - one opcode table
    if name in _LITERALS:
        stack.append(arg)
    elif name in _CONSTANTS:
        stack.append(_CONSTANTS[name])
    elif name in _IGNORED:
        if name == "POP_MARK":
            _pop_mark(stack)
    elif name == "MARK":
        stack.append(_MARK)
    elif name == "EMPTY_DICT":
        stack.append({})
    elif name in ("EMPTY_LIST", "EMPTY_SET"):
        stack.append([])
    elif name == "EMPTY_TUPLE":
        stack.append(())
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = stack[-n:]
        del stack[-n:]
        stack.append(tuple(items))
    elif name in ("TUPLE", "LIST", "DICT", "FROZENSET"):
        items = _pop_mark(stack)
        if name == "DICT":
            stack.append({_hashable(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)})
        else:
            stack.append(tuple(items) if name == "TUPLE" else list(items))
    elif name in ("APPEND", "APPENDS", "ADDITEMS"):
        items = [stack.pop()] if name == "APPEND" else _pop_mark(stack)
        if isinstance(stack[-1], list):
            stack[-1].extend(items)
    elif name in ("SETITEM", "SETITEMS"):
        items = stack[-2:] if name == "SETITEM" else _pop_mark(stack)
        if name == "SETITEM":
            del stack[-2:]
        target = stack[-1]
        if isinstance(target, dict):
            for i in range(0, len(items) - 1, 2):
                target[_hashable(items[i])] = items[i + 1]
    elif name == "MEMOIZE":
        memo[len(memo)] = stack[-1]
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        memo[int(arg)] = stack[-1]
    elif name in ("GET", "BINGET", "LONG_BINGET"):
        stack.append(memo.get(int(arg), OPAQUE))
    elif name in _CALLS:
        n = _CALLS[name]
        if n:
            del stack[-n:]
        stack.append(OPAQUE)
    elif name == "BUILD":
        stack.pop()  # the state given to __setstate__: the object stays opaque
    else:
        # PERSID, INST, OBJ, NEXT_BUFFER...: not something arq writes; refuse rather than guess.
        raise PeekError(f"unsupported opcode {name}")


def peek(data: bytes) -> Any:
    """The value a pickle describes, with plain data kept and every constructed object as ``OPAQUE``.

    Raises PeekError for bytes that are not a well-formed pickle.
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                if len(stack) != 1:
                    raise PeekError("unbalanced pickle")
                return stack[0]
            _step(opcode.name, arg, stack, memo)
    except PeekError:
        raise
    except Exception as exc:  # genops raises ValueError and friends on truncated or foreign bytes
        raise PeekError(f"not a pickle: {exc}") from None
    raise PeekError("pickle has no STOP opcode")


def looks_pickled(data: bytes) -> bool:
    """Pickle protocol 2 and later start with PROTO (0x80); JSON never does."""
    return data[:1] == b"\x80"
