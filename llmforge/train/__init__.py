"""The pretrain engine shared by pretrain, midtrain and context-extend.

- `step.py`: the one training step (forward, backward, accumulation, clipping, update);
- `loop.py`: the loop, resume and preemption; `callbacks.py`: metrics, validation,
  checkpoints, spike policy, MoE bias; `checkpoint.py`: atomic checkpoints;
- `optim.py`, `schedule.py`: AdamW / Muon and the WSD, cosine and multi-step schedules;
- `engine.py`: `train_model(model, spec, out)`, the function the stages call.
"""
