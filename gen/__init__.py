"""Generation: the orbit-video diffusion transformer, its VAE, text encoder, pipeline and the
synthetic world it trains on.

Modules (import them directly; this package imports nothing heavy):

    text      SentenceEncoder: the frozen, offline all-MiniLM-L6-v2 (token + pooled embeddings)
    vae       make_vae, encode_frames, decode_latents: a per-frame 8x AutoencoderKL
    dit       OrbitDiT: spacetime-patch transformer with Plücker-ray, text and image conditioning
    flow      flow_matching_loss: the rectified-flow objective with CFG dropout
    pipeline  OrbitVideoPipeline: prompt (+ image, cameras) -> Clip with known cameras
    world     the synthetic asset world and its orbit datasets
"""
