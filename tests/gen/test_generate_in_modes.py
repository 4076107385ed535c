"""Generation for prompts that ask for different think modes: grouped, in order, restored."""

import pytest

from llmforge.gen.base import generate_in_modes
from tests.eval.helpers import ScriptedGenerator


def test_each_prompt_is_generated_in_its_mode_and_order_is_kept():
    gen = ScriptedGenerator(lambda prompt, kw: f"{prompt}:{kw.get('enable_thinking')}",
                            template_kwargs={"keep": 1})  # fmt: skip
    prompts = ["a", "b", "c", "d"]
    out = generate_in_modes(gen, prompts, ["think", None, "no_think", "think"], n=2)
    assert [group[0].text for group in out] == ["a:True", "b:None", "c:False", "d:True"]
    assert all(len(group) == 2 for group in out)
    assert len(gen.calls) == 3 and all(c["template_kwargs"]["keep"] == 1 for c in gen.calls)
    assert gen.template_kwargs == {"keep": 1}  # restored


def test_template_kwargs_are_restored_when_generation_fails():
    def boom(prompt, kw):
        raise RuntimeError("backend died")

    gen = ScriptedGenerator(boom, template_kwargs={"keep": 1})
    with pytest.raises(RuntimeError):
        generate_in_modes(gen, ["a"], ["no_think"])
    assert gen.template_kwargs == {"keep": 1}
