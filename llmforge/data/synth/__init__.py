"""Procedurally generated math, chat, preference, RL and eval data with verifiable answers.

- `problems`: arithmetic and word problems with worked steps (`Problem`, `make_problem`);
- `splits`: the hash partition that keeps eval and RL items out of training data;
- `math_text`, `chat`, `prefs`, `tasks`: rows in the schemas of docs/contract.md;
- `planted`: duplicates planted for the dedup stage.

`heldout_arithmetic_tasks` and `heldout_format_tasks` make held-out eval tasks of a given
difficulty for the eval stage.
"""

from llmforge.data.synth.problems import Problem, make_problem
from llmforge.data.synth.splits import sample, split_of
from llmforge.data.synth.tasks import heldout_arithmetic_tasks, heldout_format_tasks

__all__ = [
    "Problem",
    "heldout_arithmetic_tasks",
    "heldout_format_tasks",
    "make_problem",
    "sample",
    "split_of",
]
