"""Export: mesh extraction from splats, texture bake, GLB, USD/USDZ, splat formats and engine
presets, with the official validators built in.

Modules: `presets` (engine axes/units/pivot), `glb` (mesh GLB, LODs, collision), `usd`
(.usdc/.usdz), `splat_formats` (INRIA PLY, .splat, KHR_gaussian_splatting GLB), `validation`
(Khronos glTF-Validator, pxr.UsdValidation), `stage` (`export_asset`, `run_export`: RUN/asset).
Submodules are imported on use, so `import orbitforge.export` stays cheap.
"""
