"""Renderer benchmark: frames/s of orbitforge's mesh renderer against the options it was chosen over.

Measures, in one process and one run, how fast each backend renders an orbit of the built-in
"globe" (a 10,000-triangle textured UV sphere) to RGB + depth + mask:

* ``orbitforge``  - `orbitforge.render.render`: numba z-buffer parallel over frames, compiled shading (the choice);
* ``trimesh-embree`` - `orbitforge.render.reference_render`: one ray per pixel through trimesh
  (embree via embreex when installed), sharing only the shading;
* ``moderngl-egl`` - Mesa's software OpenGL (llvmpipe) through a headless EGL context, same
  cameras, texture and shading; skipped with a reason when moderngl or EGL is missing.

Camera path: `orbit` at elevation 20 deg, fov 40 deg, radius from `orbit_radius_to_fit`, aimed at
the globe's centre; RenderConfig(supersample=1).  The first call of each backend (numba compile
or cache load, GL context and shader creation) is timed separately as warm-up; then each
measurement is repeated and the best and median wall times (time.perf_counter) are kept.  The
machine is shared and noisy, so the ratio of orbitforge's median fps to each peer's median fps,
measured in the same run, means more than the absolute numbers.  Each backend's output is checked
against the ray-cast reference (mask IoU, mean |RGB| difference where both cover), so a
fast-but-wrong renderer cannot look good.  Project target: >= 50 frames/s at 128^2 on 2 cores.

Run:  .venv/bin/python bench/render.py [--frames 48] [--sizes 128 256] [--repeats 5] [--out PATH]
Prints a markdown table and writes JSON (default bench/results/render.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numba
import numpy as np

from orbitforge import builtin
from orbitforge.cameras import Cameras, orbit, orbit_radius_to_fit
from orbitforge.mesh import MeshAsset, bounding_sphere
from orbitforge.render import RenderConfig, RenderOutput, reference_render, render, srgb_to_linear

CONFIG = RenderConfig(supersample=1)
TARGET_FPS_128 = 50.0  # from the project's renderer issue: >= 50 frames/s at 128^2 on 2 cores

_VERTEX_SHADER = """
#version 330
uniform mat4 proj_view;  // OpenGL projection @ view, world -> clip
in vec3 in_pos; in vec3 in_normal; in vec2 in_uv;
out vec3 v_pos; out vec3 v_normal; out vec2 v_uv; out float v_z;
void main() {
    gl_Position = proj_view * vec4(in_pos, 1.0);
    v_pos = in_pos; v_normal = in_normal; v_uv = in_uv;
    v_z = gl_Position.w;  // = OpenCV camera z, affine in the world so interpolated exactly
}
"""
# Same model as orbitforge.render._shade: linear-light albedo x (ambient + (1 - ambient) Lambert),
# double-sided normals, world-fixed light, sRGB encode.  The texture is uploaded already linear.
_FRAGMENT_SHADER = """
#version 330
uniform sampler2D albedo; uniform vec3 light_dir; uniform vec3 eye; uniform float ambient;
in vec3 v_pos; in vec3 v_normal; in vec2 v_uv; in float v_z;
layout(location = 0) out vec4 out_rgba; layout(location = 1) out float out_z;
void main() {
    vec3 n = normalize(v_normal);
    if (dot(n, v_pos - eye) > 0.0) n = -n;
    vec3 c = texture(albedo, v_uv).rgb * (ambient + (1.0 - ambient) * clamp(dot(n, light_dir), 0.0, 1.0));
    c = clamp(c, 0.0, 1.0);
    vec3 srgb = mix(c * 12.92, 1.055 * pow(c, vec3(1.0 / 2.4)) - 0.055, step(0.0031308, c));
    out_rgba = vec4(srgb, 1.0); out_z = v_z;
}
"""


def opengl_projection(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """(4, 4) OpenGL clip-from-camera matrix equal to the pinhole K (pixel centres at +0.5).

    OpenGL camera axes (x right, y up, looking down -z); NDC y up, so image row j is GL row H-1-j.
    """
    fx, s, cx, fy, cy = K[0, 0], K[0, 1], K[0, 2], K[1, 1], K[1, 2]
    return np.array([
        [2 * fx / width, -2 * s / width, (width - 2 * cx) / width, 0],
        [0, 2 * fy / height, (2 * cy - height) / height, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0],
    ])


class ModernglRenderer:
    """Headless Mesa (llvmpipe) renderer of one textured part, built lazily so moderngl stays optional."""

    def __init__(self) -> None:
        import moderngl  # optional: only this backend needs it

        self.gl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.prog = self.ctx.program(vertex_shader=_VERTEX_SHADER, fragment_shader=_FRAGMENT_SHADER)
        self.renderer = self.ctx.info["GL_RENDERER"]

    def __call__(self, parts: tuple[MeshAsset, ...], cams: Cameras, config: RenderConfig) -> RenderOutput:
        (part,) = parts  # the benchmark asset is one textured part; nothing more is implemented here
        ctx, T, H, W = self.ctx, len(cams), cams.height, cams.width
        verts = np.concatenate([part.vertices, part.vertex_normals, part.uvs], axis=1).astype("f4")  # [V, 8]
        vbo, ibo = ctx.buffer(verts.tobytes()), ctx.buffer(part.faces.astype("i4").tobytes())
        vao = ctx.vertex_array(self.prog, [(vbo, "3f 3f 2f", "in_pos", "in_normal", "in_uv")], ibo)
        tex_rgb = srgb_to_linear(part.base_colour[::-1, :, :3] / 255.0)  # GL rows go bottom-up
        tex = ctx.texture(tex_rgb.shape[1::-1], 3, np.ascontiguousarray(tex_rgb, "f4").tobytes(), dtype="f4")
        tex.filter = (self.gl.LINEAR, self.gl.LINEAR)  # bilinear, repeat-wrapped: glTF's default sampler
        colour, z_buf = ctx.renderbuffer((W, H), 4), ctx.renderbuffer((W, H), 1, dtype="f4")
        fbo = ctx.framebuffer([colour, z_buf], ctx.depth_renderbuffer((W, H)))
        fbo.use()
        ctx.enable(self.gl.DEPTH_TEST)  # no face culling: orbitforge renders double-sided
        tex.use(0)
        light = np.asarray(config.light_dir, "f4")
        self.prog["albedo"].value, self.prog["ambient"].value = 0, config.ambient
        self.prog["light_dir"].value = tuple(light / np.linalg.norm(light))
        centre, bound = bounding_sphere(parts)
        rgb, depth = np.empty((T, H, W, 3), np.uint8), np.empty((T, H, W), np.float32)
        mask = np.empty((T, H, W), bool)
        opengl_axes = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV camera (y down, z forward) -> OpenGL
        for t in range(T):
            dist = np.linalg.norm(cams.centres[t] - centre)
            near, far = max(dist - bound, 1e-3) * 0.9, (dist + bound) * 1.1
            proj_view = opengl_projection(cams.K[t], W, H, near, far) @ opengl_axes @ cams.w2c[t]
            self.prog["proj_view"].write(proj_view.T.astype("f4").tobytes())  # GLSL is column-major
            self.prog["eye"].value = tuple(cams.centres[t])
            fbo.clear(*(c / 255 for c in config.background), 0.0, depth=1.0)  # alpha 0 = no surface
            vao.render()
            img = np.frombuffer(fbo.read(components=4, attachment=0), np.uint8).reshape(H, W, 4)[::-1]
            z = np.frombuffer(fbo.read(components=1, attachment=1, dtype="f4"), np.float32).reshape(H, W)[::-1]
            rgb[t], mask[t] = img[..., :3], img[..., 3] > 0
            depth[t] = np.where(mask[t], z, 0)
        for obj in (vao, vbo, ibo, tex, fbo, colour, z_buf):
            obj.release()
        return RenderOutput(rgb, depth, mask)


def agreement(out: RenderOutput, ref: RenderOutput) -> dict[str, float]:
    """Mask IoU with the reference, mean and max |RGB| difference (0-255) where both cover."""
    both = out.mask & ref.mask
    iou = both.sum() / max((out.mask | ref.mask).sum(), 1)
    diff = np.abs(out.rgb[both].astype(np.int16) - ref.rgb[both])  # [P, 3]
    return {"mask_iou": float(iou), "rgb_mae": float(diff.mean()) if both.any() else math.nan,
            "rgb_max": int(diff.max()) if both.any() else -1}


def time_runs(fn: Callable[[], RenderOutput], repeats: int) -> tuple[list[float], RenderOutput]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


def numba_cache_state() -> str:
    """Whether the warm-up compiled the rasteriser or loaded it from numba's on-disk cache."""
    from orbitforge import render as render_module

    stats = getattr(getattr(render_module, "_rasterize", None), "stats", None)  # private: may move
    if stats is None:
        return "cache state unknown"
    return "loaded from cache" if sum(stats.cache_hits.values()) else "compiled"


def machine_info(gl_renderer: str | None) -> dict:
    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "numba_threads": numba.get_num_threads(), "numba_threading_layer": numba.threading_layer(),
        "llvmpipe_threads": os.environ.get("LP_NUM_THREADS", "default (one per CPU)"), "gl_renderer": gl_renderer,
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {p: version(p) for p in ("numpy", "numba", "trimesh", "embreex", "moderngl", "glcontext")},
    }


def load_gl() -> tuple[ModernglRenderer | None, str, float]:
    """The GL backend, or None and why not, plus its setup time (context + shaders)."""
    start = time.perf_counter()
    try:
        return ModernglRenderer(), "", time.perf_counter() - start
    except ImportError:
        return None, "moderngl is not installed; pip install moderngl", 0.0
    except Exception as exc:  # glcontext raises a plain Exception when no EGL display/driver loads
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", 0.0


def measure(backends: dict[str, Callable], parts, cams: dict[int, Cameras], repeats: int) -> dict:
    """Per backend per size: fps (best, median), ms/frame, agreement and orbitforge's speed-up."""
    results: dict[str, dict[str, dict]] = {name: {} for name in backends}
    for size, cam in cams.items():
        outs = {}
        for name, fn in backends.items():
            times, outs[name] = time_runs(lambda: fn(parts, cam, CONFIG), repeats)
            results[name][str(size)] = {
                "fps_best": len(cam) / min(times), "fps_median": len(cam) / statistics.median(times),
                "ms_per_frame": 1000 * statistics.median(times) / len(cam), "times_s": times,
            }
        for name in backends:  # the reference's last output is the ground truth
            entry = results[name][str(size)]
            entry.update(agreement(outs[name], outs["trimesh-embree"]))
            entry["orbitforge_speedup"] = results["orbitforge"][str(size)]["fps_median"] / entry["fps_median"]
    return results


def print_report(results: dict, frames: int, repeats: int) -> None:
    print(f"globe (10k triangles, textured), {frames}-frame orbit, best/median of {repeats}; "
          f"{os.cpu_count()} CPUs, numba threads {numba.get_num_threads()}\n")
    print("| backend | size | fps (median) | fps (best) | ms/frame | mask IoU vs ref | RGB MAE / max | orbitforge / this |")
    print("|---|---|---|---|---|---|---|---|")
    for name in results:
        for size, r in results[name].items():
            print(f"| {name} | {size}² | {r['fps_median']:.1f} | {r['fps_best']:.1f} | {r['ms_per_frame']:.2f} "
                  f"| {r['mask_iou']:.4f} | {r['rgb_mae']:.4f} / {r['rgb_max']} | {r['orbitforge_speedup']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48, help="views per orbit")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square image sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per backend and size")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "render.json")
    args = parser.parse_args()

    parts = builtin.load("globe")
    centre, bound = bounding_sphere(parts)
    radius = orbit_radius_to_fit(bound, 40.0)
    cams = {s: orbit(args.frames, radius=radius, elevation_deg=20.0, fov_deg=40.0, width=s, height=s, target=centre)
            for s in args.sizes}

    # 1. backends, each warmed up by a first call on 2 frames (numba compiles or loads its cache)
    backends: dict[str, Callable] = {"orbitforge": render, "trimesh-embree": reference_render}
    gl, gl_missing, gl_setup_s = load_gl()
    if gl is not None:
        backends["moderngl-egl"] = gl
    warmup_s = {}
    for name, fn in backends.items():
        start = time.perf_counter()
        fn(parts, cams[args.sizes[0]][:2], CONFIG)
        warmup_s[name] = time.perf_counter() - start + (gl_setup_s if fn is gl else 0.0)
    numba_cache = numba_cache_state()

    # 2. timed runs and report
    results = measure(backends, parts, cams, args.repeats)
    print_report(results, args.frames, args.repeats)
    if gl is None:
        print(f"\nmoderngl/EGL: not available ({gl_missing})")
    print("\nwarm-up (first call, 2 frames): " + ", ".join(f"{k} {v:.2f} s" for k, v in warmup_s.items())
          + f"; numba kernel {numba_cache} (NUMBA_CACHE_DIR=$(mktemp -d) forces a cold compile)")
    if "128" in results["orbitforge"]:
        fps = results["orbitforge"]["128"]["fps_median"]
        print(f"target >= {TARGET_FPS_128:.0f} fps at 128²: {'met' if fps >= TARGET_FPS_128 else 'NOT met'} ({fps:.1f})")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "asset": "globe", "frames": args.frames, "sizes": args.sizes, "repeats": args.repeats,
        "camera": {"elevation_deg": 20.0, "fov_deg": 40.0, "radius": radius, "target": centre.tolist()},
        "machine": machine_info(gl.renderer if gl else None), "warmup_s": warmup_s, "numba_kernel": numba_cache,
        "unavailable": {} if gl else {"moderngl-egl": gl_missing}, "results": results,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
