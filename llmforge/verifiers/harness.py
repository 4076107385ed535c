"""The two halves of a code test, each run in a sandboxed interpreter of its own.

- The **player** loads the untrusted program (the completion) and then answers calls:
  it reads `[name, args, kwargs]`, calls the program's function and writes back its
  return value, encoded as plain built-in values.
- The **judge** runs the trusted test code (the sample's `tests`, plus the prompt's own
  helper functions). Each function under test is a stand-in that forwards the call to the
  player and decodes the answer. The judge alone writes the verdict, to a pipe only it
  holds, after every test has run.

The untrusted code never shares a process with the tests, the expected values or the
verdict channel, so it cannot patch them, exit early on their behalf or print a forged
report; all it controls is the answers it sends, and `decode` turns those into exact
built-in types (no subclasses, no objects with their own `__eq__`) or refuses them.

This file is not imported by the children: `llmforge.verifiers.code` sends its source, so it
uses the standard library only and no `from __future__`.
"""

import builtins
import json
import os
import sys

MAX_MESSAGE = 32 * 2**20
MAX_DEPTH = 100
# Tags of the encoded containers that JSON lacks; lists, str, numbers, bools and None are
# JSON's own.
TAGS = ("tuple", "dict", "set", "frozenset", "bytes", "complex")


class Unplain(TypeError):
    """A value that is not made of exact built-in types."""


class Broken(BaseException):
    """The program under test failed outside a normal return or exception: this ends the
    test, and `except Exception` in the tests cannot swallow it."""


# ---------------------------------------------------------------- values on the wire


def scalar(value):
    """None or an exact bool, int, float or str (`is` checks: no metaclass gets a say)."""
    kind = type(value)
    return value is None or kind is bool or kind is int or kind is float or kind is str


def encode(value, depth=0):
    """`value` as JSON-able data; Unplain unless every part is an exact built-in type."""
    kind = type(value)
    if depth > MAX_DEPTH:
        raise Unplain("the value is nested too deeply")
    if scalar(value) or kind is list:
        return value if kind is not list else [encode(v, depth + 1) for v in value]
    if kind is tuple or kind is set or kind is frozenset:
        return {kind.__name__: [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    raise Unplain(f"a {kind.__name__!s} is not a plain built-in value")


def decode(data, depth=0):
    """The value `encode` made; ValueError for anything it could not have made."""
    kind = type(data)
    if depth > MAX_DEPTH:
        raise ValueError("nested too deeply")
    if scalar(data) or kind is list:
        return data if kind is not list else [decode(v, depth + 1) for v in data]
    if kind is not dict or len(data) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = data.items()
    if tag not in TAGS:
        raise ValueError(f"unknown tag {tag!r}")
    return _decode_tagged(tag, body, depth)


def _decode_tagged(tag, body, depth):
    if tag == "bytes":
        if type(body) is not str:
            raise ValueError("malformed bytes")
        return bytes.fromhex(body)
    if type(body) is not list:
        raise ValueError(f"malformed {tag}")
    if tag == "complex":
        if len(body) != 2 or not all(type(x) in (int, float) for x in body):
            raise ValueError("malformed complex")
        return complex(body[0], body[1])
    if tag == "dict":
        if not all(type(p) is list and len(p) == 2 for p in body):
            raise ValueError("malformed dict")
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
    items = [decode(v, depth + 1) for v in body]
    return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)


def send(fd, message):
    data = json.dumps(message).encode()
    if len(data) > MAX_MESSAGE:
        raise Unplain("the value is too large")
    data = len(data).to_bytes(4, "big") + data
    while data:
        data = data[os.write(fd, data) :]


def receive(fd):
    """The next message on `fd`; None when the other side has closed it."""
    head = _read_exactly(fd, 4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError("message too large")
    body = _read_exactly(fd, size)
    if body is None:
        return None
    return json.loads(body)


def _read_exactly(fd, n):
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def describe(error):
    """`Type: message` of an exception, without trusting its `__str__` to behave."""
    try:
        text = str(error)
    except BaseException:  # noqa: BLE001 (the program's exception may raise anything)
        text = "?"
    return f"{type(error).__name__}: {text}"[:2000]


def builtin_exception(error):
    """The nearest built-in Exception class of `error` (its own type may be the program's)."""
    for cls in type(error).__mro__:
        if getattr(builtins, cls.__name__, None) is cls and issubclass(cls, Exception):
            return cls.__name__
    return "Exception"


# ---------------------------------------------------------------- the player (untrusted)


def play(request_fd, answer_fd):
    """Load `main.py`, then answer calls until the judge closes its end."""
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    failure = None
    try:
        with open("main.py", encoding="utf-8") as f:
            program = compile(f.read(), "main.py", "exec")
        exec(program, namespace)
    except BaseException as e:  # noqa: BLE001 (sys.exit, KeyboardInterrupt: all fail)
        failure = "the program stopped while loading: " + describe(e)
    while (request := receive(request_fd)) is not None:
        send(answer_fd, answer(namespace, request, failure))


def answer(namespace, request, failure):
    """The reply to one `[name, args, kwargs]` call."""
    if failure:
        return ["error", failure]
    name, args, kwargs = request
    function = namespace.get(name)
    if not callable(function):
        return ["error", f"the program defines no function {name!r}"]
    try:
        value = function(*decode(args), **decode(kwargs))
    except Exception as e:  # noqa: BLE001 (the tests may expect it; the judge re-raises it)
        return ["raise", builtin_exception(e), describe(e)]
    except BaseException as e:  # noqa: BLE001
        return ["error", f"{name}() stopped the program: {describe(e)}"]
    try:
        return ["ok", encode(value)]
    except (Unplain, ValueError, RecursionError) as e:
        return ["error", f"{name}() returned {e}"]


# ---------------------------------------------------------------- the judge (trusted)


class Calls:
    """Stand-ins for the functions under test: each call goes to the player."""

    def __init__(self, request_fd, answer_fd):
        self.request_fd, self.answer_fd = request_fd, answer_fd
        self.count = 0
        self.broken = None

    def stand_in(self, name):
        def call(*args, **kwargs):
            return self.call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def call(self, name, args, kwargs):
        if self.broken:
            raise Broken(self.broken)
        self.count += 1
        try:
            send(self.request_fd, [name, encode(list(args)), encode(kwargs)])
            reply = receive(self.answer_fd)
        except Unplain as e:
            self.broken = f"the tests passed {name}() an argument that is not plain: {e}"
        except (OSError, ValueError) as e:
            self.broken = f"the program's answer could not be read: {describe(e)}"
        else:
            return self.outcome(name, reply)
        raise Broken(self.broken)

    def outcome(self, name, reply):
        if reply is None:
            self.broken = f"the program ended during the call to {name}()"
        elif type(reply) is list and len(reply) == 2 and reply[0] == "ok":
            try:
                return decode(reply[1])
            except (ValueError, TypeError, RecursionError) as e:
                self.broken = f"{name}() answered a malformed value: {describe(e)}"
        elif type(reply) is list and len(reply) == 3 and reply[0] == "raise":
            cls = getattr(builtins, str(reply[1]), None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                raise cls(str(reply[2]))
            self.broken = f"{name}() answered an unknown exception {reply[1]!r}"
        elif type(reply) is list and len(reply) == 2 and reply[0] == "error":
            self.broken = str(reply[1])[:2000]
        else:
            self.broken = f"{name}() answered a malformed reply"
        raise Broken(self.broken)


def run_tests(job, calls):
    """Run the prompt's helpers, then the tests with stand-ins for the functions under test."""
    namespace = {"__name__": "__main__"}
    if job.get("prompt"):
        try:  # prose, or code that only the completion finishes, defines no helpers
            exec(compile(job["prompt"], "prompt.py", "exec"), namespace)
        except Exception:  # noqa: BLE001, S110 (helpers defined before the failure stay)
            pass
    for name in job["names"]:
        namespace[name] = calls.stand_in(name)
    exec(compile(job["tests"], "tests.py", "exec"), namespace)
    entry = job.get("entry_point")
    if entry and callable(namespace.get("check")):
        namespace["check"](namespace[entry])


def judge(request_fd, answer_fd, report_fd):
    """Read the job from stdin, run the tests, write the verdict to `report_fd`, exit."""
    calls = Calls(request_fd, answer_fd)
    try:
        run_tests(json.loads(sys.stdin.read()), calls)
        error = calls.broken or (None if calls.count else "the tests never called the program")
    except BaseException as e:  # noqa: BLE001 (any failure of the tests is a failed test)
        error = calls.broken or describe(e)
    report = {"passed": error is None, "calls": calls.count, "error": error}
    os.write(report_fd, json.dumps(report).encode())
    os.close(report_fd)
    os._exit(0)  # the tests' own atexit hooks and threads have no say
