"""A few steps of each post-training stage on a CUDA GPU, through the real stages.

Each part runs the stage in this process (`llmforge.stage.execute`, what the command calls)
on small random models and synthetic math chat made on the spot (gpu_data.py):

| part        | what runs                                                                   |
| ----------- | --------------------------------------------------------------------------- |
| sft         | stock Llama, bf16, padding-free packing                                     |
| sft-custom  | the llmforge model class (gated attention), grad_accum 2, fused linear CE   |
| dpo         | stock Llama, APO-zero, bf16                                                 |
| rlvr        | GRPO/DAPO, transformers backend, 3 steps                                    |
| rlvr-vllm   | the same with `rollout.backend=vllm`: generation and the weight sync        |
| eval        | sampled math task, transformers backend on the GPU                          |
| eval-vllm   | the same with `backend=vllm`                                                |
| logprob-gap | mean and max |sampler logprob - trainer logprob| at temperature 0.8        |
| rl-async    | bench/rl_async_bench.py --gpu: RL steps/min, colocated vs vLLM servers,     |
|             | synchronous vs asynchronous, with the weight sync (NCCL on 2+ GPUs)         |

The vLLM parts print "skip: vllm not installed" where vLLM is missing (the borrowed H200
has none). Each part prints one `ROW: part | status | figure` line for gpu-check.sh; a
failing part prints its traceback and the next part still runs.

    python bench/gpu_post.py [--steps 5] [--only sft,dpo] [--json F]
    python bench/gpu_post.py --dry    # CPU: build the inputs, plan every stage (no training)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu_data, gpu_harness  # noqa: E402

PARTS = (
    "sft",
    "sft-custom",
    "dpo",
    "rlvr",
    "rlvr-vllm",
    "eval",
    "eval-vllm",
    "logprob-gap",
    "rl-async",
)
ROOT = Path(__file__).resolve().parents[1]


class Skip(Exception):
    """A part that cannot run here, with the reason."""


@dataclass
class Context:
    work: Path
    steps: int
    dry: bool
    data: dict[str, Path] = field(default_factory=dict)
    llama: Path | None = None
    custom: Path | None = None


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_installed() -> bool:
    try:
        return importlib.util.find_spec("vllm") is not None
    except ImportError:  # a broken or blocked install counts as none
        return False


def _vllm_or_skip() -> None:
    if not vllm_installed():
        raise Skip("vllm not installed (the vLLM parts run on GPU nodes that have it)")


def _stage(ctx: Context, module: str, items: list[str], sets: list[str], out: str,
           config: Path | None = None) -> dict:  # fmt: skip
    """Run (or, dry, plan) one stage; return its manifest metrics and duration."""
    from importlib import import_module

    from llmforge.stage import execute

    stage = import_module(f"stages.{module}").STAGE
    path = execute(stage, items, config_path=config, sets=sets, out=ctx.work / out,
                   dry_run=ctx.dry)  # fmt: skip
    if ctx.dry:
        return {"planned": True}
    manifest = json.loads((path / "manifest.json").read_text())
    return {**manifest["metrics"], "duration_s": manifest.get("duration_s")}


def _trl_sets(ctx: Context, batch: int, length: int) -> list[str]:
    return [f"train.max_steps={ctx.steps}", "train.bf16=true", f"train.batch_size={batch}",
            f"train.max_length={length}", "train.logging_steps=1", "train.save_steps=1000",
            "train.lr=1e-4"]  # fmt: skip


def _loss_figure(m: dict) -> str:
    if m.get("planned"):
        return "planned (dry run)"
    return f"{m.get('steps', '?')} steps in {m.get('duration_s') or 0:.1f} s, loss {m.get('train_loss')}"


def part_sft(ctx: Context) -> str:
    sets = _trl_sets(ctx, 8, 512) + ["sft.packing=true", "style.enabled=false",
                                     "eval.format_prompts=0"]  # fmt: skip
    return _loss_figure(_stage(ctx, "sft", [f"model={ctx.llama}", f"chat={ctx.data['sft']}"],
                               sets, "sft"))  # fmt: skip


def part_sft_custom(ctx: Context) -> str:
    sets = _trl_sets(ctx, 4, 512) + ["train.grad_accum=2", "sft.packing=false",
                                     "sft.fused_loss=true", "style.enabled=false",
                                     "eval.format_prompts=0"]  # fmt: skip
    items = [f"model={ctx.custom}", f"chat={ctx.data['sft']}"]
    return _loss_figure(_stage(ctx, "sft", items, sets, "sft-custom"))


def part_dpo(ctx: Context) -> str:
    sets = _trl_sets(ctx, 8, 256) + ["dpo.loss=apo_zero", "dpo.beta=0.1"]
    return _loss_figure(_stage(ctx, "dpo", [f"model={ctx.llama}", str(ctx.data["dpo"])],
                               sets, "dpo"))  # fmt: skip


def _rlvr(ctx: Context, backend: str) -> str:
    sets = ["steps=3", "checkpoint_every=10", "filter.enabled=false", "rollout.group_size=4",
            "rollout.prompts_per_step=2", "rollout.max_new_tokens=32", "rollout.max_rounds=1",
            "rollout.dynamic_sampling=false", f"rollout.backend={backend}",
            "optim.micro_batch=8"]  # fmt: skip
    m = _stage(ctx, "rlvr", [str(ctx.llama), f"prompts={ctx.data['rl']}"], sets,
               f"rlvr-{backend}", config=ROOT / "recipes" / "tiny" / "rlvr.yaml")  # fmt: skip
    if m.get("planned"):
        return "planned (dry run)"
    return (f"{m.get('steps_run')} steps in {m.get('train_seconds')} s, generation share "
            f"{m.get('generation_fraction')}, {m.get('tokens')} tokens")  # fmt: skip


def part_rlvr(ctx: Context) -> str:
    return _rlvr(ctx, "transformers")


def part_rlvr_vllm(ctx: Context) -> str:
    _vllm_or_skip()
    return _rlvr(ctx, "vllm")


def _eval(ctx: Context, backend: str) -> str:
    sets = [f"backend={backend}", f"device={_device()}",
            "sampling.n=2", "sampling.k=[1, 2]", "sampling.max_new_tokens=32",
            "report=false", "decontam.enabled=false", "answer_bpb=false"]  # fmt: skip
    m = _stage(ctx, "eval", [f"model={ctx.llama}", f"task={ctx.data['eval']}"], sets,
               f"eval-{backend}")  # fmt: skip
    return "planned (dry run)" if m.get("planned") else f"done in {m.get('duration_s') or 0:.1f} s"


def part_eval(ctx: Context) -> str:
    return _eval(ctx, "transformers")


def part_eval_vllm(ctx: Context) -> str:
    _vllm_or_skip()
    return _eval(ctx, "vllm")


def _gap(generator, model, prompts: list, temperature: float) -> tuple[float, float]:
    """Mean and max |sampler logprob - logprob the trainer computes| over sampled tokens."""
    import torch

    device = next(model.parameters()).device
    diffs = []
    groups = generator.generate(prompts, n=2, temperature=temperature, max_new_tokens=32)
    with torch.no_grad():
        for c in (c for group in groups for c in group):
            ids = torch.tensor([c.prompt_token_ids + c.token_ids], device=device)
            logits = model(input_ids=ids).logits[0, len(c.prompt_token_ids) - 1 : -1].float()
            logp = torch.log_softmax(logits / temperature, -1)
            ours = logp.gather(-1, ids[0, len(c.prompt_token_ids) :, None]).squeeze(-1)
            diffs.append((ours.cpu() - torch.tensor(c.logprobs)).abs())
    flat = torch.cat(diffs)
    return float(flat.mean()), float(flat.max())


def part_logprob_gap(ctx: Context) -> str:
    if ctx.dry:
        raise Skip("needs generation on the GPU")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmforge.gen import TransformersGenerator

    rows = [json.loads(x) for x in ctx.data["rl"].read_text().splitlines()[:8]]
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    model = AutoModelForCausalLM.from_pretrained(str(ctx.llama)).to(_device()).eval()
    tok = AutoTokenizer.from_pretrained(str(ctx.llama))
    mean, worst = _gap(TransformersGenerator(model, tok), model, prompts, 0.8)
    line = f"transformers mean {mean:.1e} max {worst:.1e}"
    if not vllm_installed():
        return line + "; vllm: not installed"
    from llmforge.gen import VLLMGenerator

    vllm = VLLMGenerator(ctx.llama, gpu_memory_utilization=0.2)
    v_mean, v_worst = _gap(vllm, model, prompts, 0.8)
    return line + f"; vllm mean {v_mean:.1e} max {v_worst:.1e}"


def part_rl_async(ctx: Context) -> str:
    """The asynchronous-RL benchmark in its own process (it starts vLLM servers)."""
    import subprocess

    if ctx.dry:
        raise Skip("starts vLLM servers on the GPU")
    _vllm_or_skip()
    cmd = [sys.executable, str(ROOT / "bench" / "rl_async_bench.py"), "--gpu", "--steps", "3",
           "--vllm-python", sys.executable]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(done.stdout + done.stderr, flush=True)
    if done.returncode:
        raise RuntimeError(f"rl_async_bench exited {done.returncode}")
    return (done.stdout.strip().splitlines() or ["no output"])[-1][:160]


RUNNERS: dict[str, Callable[[Context], str]] = {
    "sft": part_sft, "sft-custom": part_sft_custom, "dpo": part_dpo, "rlvr": part_rlvr,
    "rlvr-vllm": part_rlvr_vllm, "eval": part_eval, "eval-vllm": part_eval_vllm,
    "logprob-gap": part_logprob_gap, "rl-async": part_rl_async,
}  # fmt: skip


def prepare(ctx: Context) -> None:
    ctx.data = gpu_data.post_data(ctx.work / "data", rows=64 if ctx.dry else 256)
    tok = gpu_data.chat_tokenizer(ctx.work, ctx.data["sft"], vocab=512 if ctx.dry else 1024)
    size = dict(hidden=64, layers=2) if ctx.dry else {}
    ctx.llama = gpu_data.stock_model(ctx.work, tok, **size)
    ctx.custom = gpu_data.custom_model(ctx.work, tok, **size)


def _first_line(e: Exception) -> str:
    text = str(e).splitlines()[0][:120] if str(e) else ""
    return f"{type(e).__name__}: {text}"


def run_part(name: str, ctx: Context) -> dict:
    start = time.perf_counter()
    try:
        status, figure = "ok", RUNNERS[name](ctx)
    except Skip as e:
        status, figure = "skip", str(e)
    except Exception as e:  # report and go on: one failing stage must not hide the others
        traceback.print_exc()
        status, figure = "FAIL", _first_line(e)
    seconds = time.perf_counter() - start
    print(f"ROW: {name} | {status} | {figure} ({seconds:.0f} s)", flush=True)
    return {"part": name, "status": status, "figure": figure, "seconds": seconds}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="optimizer steps of sft and dpo")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    gpu_harness.add_options(p, PARTS, "CPU: build inputs and plan each stage")
    args = gpu_harness.parse(p, argv, PARTS)
    if args.steps < 1:
        p.error("--steps must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    gpu_harness.need_cuda(args, "gpu_post")
    with tempfile.TemporaryDirectory(prefix="llmforge-gpu-post-") as tmp:
        ctx = Context(args.work or Path(tmp), args.steps, args.dry)
        prepare(ctx)
        results = [run_part(name, ctx) for name in args.only]
    gpu_harness.append_json(args.json, [{**r, "part": f"post/{r['part']}"} for r in results])
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
