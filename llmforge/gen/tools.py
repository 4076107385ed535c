"""Multi-turn generation with a Python tool that runs in the sandbox (rlvr rollouts, eval tasks).

The prompt goes through the chat template with the tool listed (`tools=[PYTHON_TOOL]`, which
llmforge's template writes into the system turn). The model writes a turn; each
`<tool_call>{"name": "python", "arguments": {"code": ...}}</tool_call>` in it (the form the
template renders `tool_calls` in, Hermes/Qwen style) runs in `llmforge.sandbox` with
`tools.timeout_s`, and what it printed (or its error) comes back as a `tool` message,
rendered by the chat template and appended as token ids, after which the model writes its
next turn. A turn without a tool call ends the rollout; so do `tools.max_turns` turns and
`rollout.max_new_tokens` model-written tokens in all.

- Only model-written tokens are trained: the completion's `mask` is 0 on the tool turns
  (and the template text around them), so they carry no loss and no gradient.
- The reward sees the model's own prose: its turns joined by newlines with the tool-call
  blocks taken out and no tool output, so the answer verifiers read the last `\\boxed{}`
  the model wrote outside its programs (its final answer), and neither a program's text
  nor what it prints counts as one. The think block of the first turn still counts for
  the `format` reward.
- The conversation is continued from token ids (`Generator.generate_ids`), so the
  transformers, vLLM and vLLM-servers backends drive the same loop and no sampled token is
  re-tokenised.
- A program runs under `ToolLimits` (wall and CPU seconds, memory) in whichever wall
  `llmforge.sandbox` has here; its output is cut at `max_output_chars`.
- Tool output is tokenised with special tokens split, so a program that prints
  `<|im_end|>` cannot end a turn or forge one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from llmforge import sandbox
from llmforge.config import check, param
from llmforge.errors import BadInput
from llmforge.gen.base import Completion, Prompt, encode_prompt, has_chat_template, mode_kwargs

PYTHON_TOOL = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run a Python program (standard library only, no network, no files "
        "outside its own directory) and return what it prints.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "the program; print results"}},
            "required": ["code"],
        },
    },
}
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_ANSWER, _OUTPUT = "LLMFORGE_ANSWER", "LLMFORGE_TOOL_OUTPUT_{}"
TURN_SEED = 7_919  # seed offset between turns, so each turn samples afresh


@dataclass(frozen=True)
class ToolLimits:
    """Bounds of a multi-turn rollout with the python tool."""

    max_turns: int = param(
        4, "assistant turns per rollout; a tool call in the last one ends the rollout"
    )
    timeout_s: float = param(5.0, "wall seconds per tool call; the sandbox kills it then")
    memory_mb: int = param(512, "address-space limit of a tool call")
    max_output_chars: int = param(
        1000, "tool output (stdout, or the error) is cut to this many characters"
    )
    workers: int = param(4, "tool calls run at once")

    def __post_init__(self):
        check(self.max_turns >= 1, "max_turns", "must be >= 1")
        check(self.timeout_s > 0, "timeout_s", "must be > 0")
        check(self.memory_mb >= 64, "memory_mb", "must be >= 64")
        check(self.max_output_chars >= 1, "max_output_chars", "must be >= 1")
        check(self.workers >= 1, "workers", "must be >= 1")


# ---------------------------------------------------------------- calls and their outputs


@dataclass(frozen=True)
class Call:
    """One parsed tool call: the code to run, or why it cannot run."""

    code: str | None
    error: str | None = None


@dataclass(frozen=True)
class Output:
    """What goes back to the model for one call."""

    text: str
    error: bool = False
    timeout: bool = False


def parse_calls(text: str) -> list[Call]:
    """Every `<tool_call>` block of one turn; a malformed one is a `Call` with its error."""
    calls = [parse_call(body) for body in _CALL.findall(text)]
    if text.count("<tool_call>") > len(calls):
        calls.append(Call(None, "a <tool_call> block was not closed with </tool_call>"))
    return calls


def parse_call(body: str) -> Call:
    """`{"name": "python", "arguments": {"code": ...}}`, or the OpenAI form with `function`
    and `arguments` as a JSON string."""
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        return Call(None, f"the tool call is not valid JSON ({e.msg})")
    fn = obj.get("function", obj) if isinstance(obj, dict) else None
    if not isinstance(fn, dict):
        return Call(None, 'a tool call is a JSON object {"name": ..., "arguments": ...}')
    if fn.get("name") != "python":
        return Call(None, f"unknown tool {fn.get('name')!r}; the only tool is 'python'")
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            args = None
    if not isinstance(args, dict) or not isinstance(args.get("code"), str):
        return Call(None, 'the python tool takes arguments {"code": "..."}')
    return Call(args["code"])


def run_call(call: Call, args: ToolLimits) -> Output:
    """Run one call in the sandbox; its stdout, or stdout and the error's last lines."""
    if call.error is not None:
        return Output(f"Error: {call.error}", error=True)
    limits = sandbox.Limits(wall_s=args.timeout_s, cpu_s=max(1, math.ceil(args.timeout_s)),
                            memory_mb=args.memory_mb)  # fmt: skip
    result = sandbox.run_python(call.code, limits)
    text = result.stdout
    if result.status == "timeout":
        text += f"\nError: the program ran past the {args.timeout_s:g} s limit and was stopped"
    elif result.status != "passed":
        text += "\n" + "\n".join(result.stderr.strip().splitlines()[-8:])
    return Output(cut(text.strip("\n"), args.max_output_chars), result.status != "passed",
                  result.status == "timeout")  # fmt: skip


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[output cut at {limit} characters]"


# ---------------------------------------------------------------- tool turns as tokens


class ToolTurns:
    """The tokens that carry tool outputs back into the conversation, as the chat template
    renders tool messages after an assistant turn, ending with the next generation prompt."""

    def __init__(self, tokenizer):
        if not has_chat_template(tokenizer):
            raise BadInput("tools.enabled needs a tokenizer with a chat template (tool messages "
                           "are rendered by it)")  # fmt: skip
        self.tokenizer = tokenizer
        self._pieces: dict[tuple, tuple[str, list[str]]] = {}

    def pieces(self, n: int, kwargs: Mapping) -> tuple[str, list[str]]:
        """(the template's text after an assistant turn's content, [text before output 1,
        between outputs, ..., after output n up to the next generation prompt])."""
        key = (n, json.dumps(kwargs, sort_keys=True))
        if key not in self._pieces:
            base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": _ANSWER}]
            head = self.tokenizer.apply_chat_template(base, tokenize=False, **kwargs)
            tools = [{"role": "tool", "name": "python", "content": _OUTPUT.format(i)}
                     for i in range(n)]  # fmt: skip
            full = self.tokenizer.apply_chat_template(
                base + tools, tokenize=False, add_generation_prompt=True, **kwargs
            )
            if not full.startswith(head):
                raise BadInput("the chat template renders earlier turns differently once a tool "
                               "message follows, so tool turns cannot be appended as tokens")  # fmt: skip
            parts = re.split("|".join(_OUTPUT.format(i) for i in range(n)), full[len(head) :])
            self._pieces[key] = (head[head.rindex(_ANSWER) + len(_ANSWER) :], parts)
        return self._pieces[key]

    def encode(self, outputs: Sequence[str], last_token: int, kwargs: Mapping) -> list[int]:
        """Token ids to append after a turn that ended with `last_token` (its stop token)."""
        closing, parts = self.pieces(len(outputs), kwargs)
        stop = self.tokenizer.decode([last_token], skip_special_tokens=False)
        rest = closing[len(stop) :] if closing.startswith(stop) else closing
        ids = self._ids(rest + parts[0])
        for text, after in zip(outputs, parts[1:], strict=True):
            ids += self._ids(text, split_special=True) + self._ids(after)
        return ids

    def _ids(self, text: str, split_special: bool = False) -> list[int]:
        if not text:
            return []
        enc = self.tokenizer(text, add_special_tokens=False, split_special_tokens=split_special)
        return list(enc["input_ids"])


# ---------------------------------------------------------------- the multi-turn rollout


@dataclass(frozen=True)
class ToolCompletion(Completion):
    """A multi-turn rollout: `mask` is 0 on tool turns; the counts go to the metrics."""

    turns: int = 1
    tool_calls: int = 0
    tool_errors: int = 0
    tool_timeouts: int = 0
    turn_limit: bool = False
    messages: list = field(default_factory=list)


@dataclass
class Trajectory:
    """One rollout in progress: everything after the prompt, and who wrote each token."""

    prompt_ids: list[int]
    kwargs: dict
    ids: list[int] = field(default_factory=list)
    mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    finish: str | None = None
    turn_limit: bool = False

    @property
    def written(self) -> int:
        return sum(self.mask)

    def add_turn(self, ids: list[int], logprobs: list[float], text: str) -> None:
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += logprobs
        self.messages.append({"role": "assistant", "content": text})

    def add_outputs(self, outputs: list[Output], ids: list[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
        self.messages += [{"role": "tool", "content": o.text} for o in outputs]
        self.calls += len(outputs)
        self.errors += sum(o.error for o in outputs)
        self.timeouts += sum(o.timeout for o in outputs)

    def completion(self) -> ToolCompletion:
        turns = [m["content"] for m in self.messages if m["role"] == "assistant"]
        prose = "\n".join(t for t in (_CALL.sub("", turn).strip() for turn in turns) if t)
        return ToolCompletion(prose, self.ids, self.logprobs, self.finish or "stop",
                              self.prompt_ids, self.mask, len(turns), self.calls, self.errors,
                              self.timeouts, self.turn_limit, self.messages)  # fmt: skip


class ToolRollout:
    """Samples multi-turn rollouts with the python tool from any `Generator`."""

    def __init__(self, tokenizer, args: ToolLimits = ToolLimits()):
        self.tokenizer, self.args = tokenizer, args
        self.tool_turns = ToolTurns(tokenizer)

    def generate(self, generator, prompts: Sequence[Prompt], modes: Sequence[str | None], n: int,
                 temperature: float, top_p: float, max_new_tokens: int,
                 seed: int) -> list[list[ToolCompletion]]:  # fmt: skip
        """`n` rollouts for each prompt, each in its think mode (None: the template's)."""
        base = dict(getattr(generator, "template_kwargs", {}) or {})
        kwargs = [{**base, "tools": [PYTHON_TOOL], **mode_kwargs(m)} for m in modes]
        prompts = [encode_prompt(self.tokenizer, p, **kw)
                   for p, kw in zip(prompts, kwargs, strict=True)]  # fmt: skip
        groups = [[Trajectory(p, kw) for _ in range(n)] for p, kw in zip(prompts, kwargs)]
        active = [t for g in groups for t in g]
        sampling = dict(temperature=temperature, top_p=top_p)
        got = generator.generate_ids(prompts, n=n, max_new_tokens=max_new_tokens, seed=seed,
                                     **sampling)  # fmt: skip
        pending = [c for g in got for c in g]
        for turn in range(1, self.args.max_turns + 1):
            self.take_turns(list(zip(active, pending, strict=True)), max_new_tokens, turn)
            active = [t for t in active if t.finish is None]
            if not active:
                break
            room = max(max_new_tokens - t.written for t in active)
            got = generator.generate_ids([t.prompt_ids + t.ids for t in active], n=1,
                                         max_new_tokens=room, seed=seed + TURN_SEED * turn,
                                         **sampling)  # fmt: skip
            pending = [g[0] for g in got]
        return [[t.completion() for t in g] for g in groups]

    def take_turns(self, live: list[tuple[Trajectory, Completion]], max_new_tokens: int,
                   turn: int) -> None:  # fmt: skip
        """Append each sampled turn; run the tool calls of those that made some."""
        waiting: list[tuple[Trajectory, list[Call]]] = []
        for t, c in live:
            room = max_new_tokens - t.written
            cut_off = len(c.token_ids) > room
            ids = c.token_ids[:room]
            text = self.tokenizer.decode(ids) if cut_off else c.text
            t.add_turn(ids, c.logprobs[:room], text)
            calls = parse_calls(text)
            if c.finish_reason == "length" or cut_off:
                t.finish = "length"
            elif not calls:
                t.finish = "stop"
            elif turn >= self.args.max_turns:
                t.finish, t.turn_limit = "stop", True
            elif t.written >= max_new_tokens:
                t.finish = "length"  # no room left for an answer
            else:
                waiting.append((t, calls))
        flat = [call for _, calls in waiting for call in calls]
        outputs = iter(sandbox.parallel(lambda c: run_call(c, self.args), flat, self.args.workers))
        for t, calls in waiting:
            mine = [next(outputs) for _ in calls]
            t.add_outputs(mine, self.tool_turns.encode([o.text for o in mine], t.ids[-1], t.kwargs))


def tool_metrics(completions: Sequence[Completion]) -> dict:
    """Turns, calls, errors and timeouts per rollout, and the share stopped by the turn limit."""
    done = [c for c in completions if isinstance(c, ToolCompletion)]
    if not done:
        return {}
    calls = sum(c.tool_calls for c in done)
    return {
        "tools/turns": sum(c.turns for c in done) / len(done),
        "tools/calls": calls / len(done),
        "tools/errors": sum(c.tool_errors for c in done) / len(done),
        "tools/error_frac": sum(c.tool_errors for c in done) / calls if calls else 0.0,
        "tools/timeouts": sum(c.tool_timeouts for c in done),
        "tools/turn_limit_frac": sum(c.turn_limit for c in done) / len(done),
        "tools/output_tokens": sum(len(c.mask) - sum(c.mask) for c in done) / len(done),
    }
