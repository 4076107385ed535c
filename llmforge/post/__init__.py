"""Post-training: SFT and DPO on TRL, GRPO/DAPO reinforcement learning, rewards and verifiers."""
