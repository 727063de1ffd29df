"""orbitforge: text, an image or a phone video in; a game-ready 3D asset out.

The spine holds the typed objects every stage passes along (`Cameras`, `Clip`,
`GaussianScene`, `MeshAsset`), the run folder (`RunDir`), the CPU mesh renderer and the CLI.
Stages live in `orbitforge.gen`, `orbitforge.recon`, `orbitforge.export` and
`orbitforge.viewers`.
"""

__version__ = "0.1.0"
