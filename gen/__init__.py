"""Generation: the orbit-video diffusion transformer, its VAE, text encoder, pipeline and the
synthetic world it trains on."""
