"""Export: mesh extraction from splats, texture bake, GLB, USD/USDZ, splat formats and engine
presets, with the official validators built in."""
