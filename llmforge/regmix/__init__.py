"""RegMix: find a data mixture by training small proxy models on random mixtures, fitting a
regression from mixture to target, and solving it (arXiv 2407.01492).

Modules: config (sections), proposals (Dirichlet prior with caps), proxies and worker
(training with the pretrain engine, locally or as a Slurm array), target, regression
(LightGBM and linear, cross-validated), solver, plots, search (the procedure end to end).
"""
