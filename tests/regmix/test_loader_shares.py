"""A regmix mixture (token shares) gives the token shares the pretrain loader produces."""

import numpy as np
import pytest

from llmforge.data.loader import DataConfig
from llmforge.data.mixture import MixtureStage
from llmforge.regmix import proposals as props
from llmforge.regmix.search import data_stats
from llmforge.train.config import OptimConfig, ScheduleConfig, SpikeConfig, TrainConfig
from llmforge.train.engine import TrainSpec, plan_data


def test_planted_token_shares_reach_the_loader(tiny_tokens):
    stats = data_stats([tiny_tokens])
    shares = np.array([0.15, 0.25, 0.6])  # far from natural
    weights = props.as_dict(stats.domains, shares)
    spec = TrainSpec(
        data=DataConfig(stages=[MixtureStage(weights=weights)]),
        train=TrainConfig(steps=200, batch_size=8, seq_len=64), optim=OptimConfig(),
        schedule=ScheduleConfig(), spike=SpikeConfig(), tokens=[tiny_tokens],
    )  # fmt: skip
    from llmforge.data.loader import Source
    from llmforge.data.tokens import TokenStore

    loader, _ = plan_data(spec, Source([TokenStore(tiny_tokens, "train")]), 0, 1)
    for _ in range(200):
        loader.next_batch()
    seen = loader.shares()
    assert [seen[d] for d in stats.domains] == pytest.approx(shares.tolist(), abs=0.03)
