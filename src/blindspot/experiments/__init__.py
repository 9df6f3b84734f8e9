"""Experiments: the residual-pitfall grids (MIDL 2022 experiments 1–3) and the latent-size sweep."""
