/*! orbitforge page viewer, bundled from orbitforge's viewers/web with:
 * three.js (https://threejs.org), Copyright © 2010-2026 three.js authors, MIT License;
 * Spark (https://sparkjs.dev), Copyright © 2025 World Labs Technologies, Inc., MIT License;
 * fflate (https://github.com/101arrowz/fflate), Copyright (c) 2026 Arjun Barrett, MIT License.
 * MIT License: Permission is hereby granted, free of charge, to any person obtaining a copy of this
 * software and associated documentation files (the "Software"), to deal in the Software without
 * restriction, including without limitation the rights to use, copy, modify, merge, publish,
 * distribute, sublicense, and/or sell copies of the Software, and to permit persons to whom the
 * Software is furnished to do so, subject to the following conditions: The above copyright notice
 * and this permission notice shall be included in all copies or substantial portions of the
 * Software. THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
 * INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE
 * AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
 * DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
 * OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
// orbitforge's static share page: one run's mesh, splats, cameras and clip frames, opened from
// disk (file://) with no server and no network.  Bundled by esbuild into one classic script
// (tools/dist/orbitforge-page.js) because a file:// page can load neither ES modules from other
// files nor fetch() anything; `orbitforge page RUN` copies it beside viewer_data.js, which sets
// window.ORBITFORGE_DATA (see viewers/page.py for its fields).
//
// URL flags: ?show=mesh,splats,cameras (or ?show=none) chooses the layers shown at start.
// For tests: window.orbitforgeReady becomes true once every layer is loaded and drawn;
// window.orbitforgeFrames counts rendered frames; window.orbitforgeError holds a load failure.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { SparkRenderer, SplatMesh, SplatFileType } from "@sparkjsdev/spark";

const LAYERS = ["mesh", "splats", "cameras"];
const FRAMES_BEFORE_READY = 8; // frames drawn after loading before the page calls itself ready

window.orbitforgeReady = false;
window.orbitforgeFrames = 0;

function decodeBase64(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

/** Layers to show at start: ?show=... when given, else what the data recommends. */
function initialLayers(data) {
  const flag = new URLSearchParams(window.location.search).get("show");
  if (flag === null) return new Set(data.defaultLayers || LAYERS);
  return new Set(flag.split(",").map((s) => s.trim()).filter((s) => LAYERS.includes(s)));
}

/** Camera frustums as one set of line segments, coloured along the clip (first frame blue). */
function frustumLines(cameras) {
  const positions = [];
  const colors = [];
  const color = new THREE.Color();
  cameras.forEach((cam, i) => {
    const [c, a, b, d, e] = cam.frustum; // centre, then image corners top-left, top-right, bottom-right, bottom-left
    const segments = [[c, a], [c, b], [c, d], [c, e], [a, b], [b, d], [d, e], [e, a], cam.up];
    color.setHSL(0.62 - 0.62 * (i / Math.max(cameras.length - 1, 1)), 0.85, 0.6);
    for (const [p, q] of segments) {
      positions.push(...p, ...q);
      colors.push(color.r, color.g, color.b, color.r, color.g, color.b);
    }
  });
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.Float32BufferAttribute(positions, 3));
  geometry.setAttribute("color", new THREE.Float32BufferAttribute(colors, 3));
  return new THREE.LineSegments(geometry, new THREE.LineBasicMaterial({ vertexColors: true }));
}

function main() {
  const data = window.ORBITFORGE_DATA;
  if (!data) {
    document.body.appendChild(el("p", { class: "missing", text: "viewer_data.js is missing beside viewer.html: re-run `orbitforge page RUN`." }));
    return;
  }
  document.title = `${data.name} · orbitforge`;

  // header: run name, key metrics, layer toggles
  const header = document.getElementById("header");
  header.appendChild(el("h1", { text: data.name }));
  const metrics = el("ul", { class: "metrics" });
  for (const line of data.metrics || []) metrics.appendChild(el("li", { text: line }));
  header.appendChild(metrics);

  const viewport = document.getElementById("viewport");
  const renderer = new THREE.WebGLRenderer({ antialias: false });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio, 2));
  renderer.setSize(viewport.clientWidth, viewport.clientHeight, false);
  renderer.setClearColor(0x1d1f24);
  viewport.appendChild(renderer.domElement);

  const scene = new THREE.Scene();
  // plain lights, not an environment map: PMREM prefiltering takes ~10 s on software WebGL
  scene.add(new THREE.HemisphereLight(0xffffff, 0x50505a, 2.2));
  const view = data.view;
  const camera = new THREE.PerspectiveCamera(50, viewport.clientWidth / viewport.clientHeight, view.near, view.far);
  camera.position.fromArray(view.eye);
  const headlight = new THREE.DirectionalLight(0xffffff, 1.2); // follows the viewer, so no side stays dark
  headlight.position.set(0.3, 0.6, 1);
  headlight.target.position.set(0, 0, -1); // both in camera space: it lights what the viewer faces
  camera.add(headlight, headlight.target);
  scene.add(camera);
  const controls = new OrbitControls(camera, renderer.domElement);
  controls.target.fromArray(view.target);
  controls.update();

  // on-demand rendering: idle pages cost nothing; Spark asks for frames when its sort finishes
  let pendingFrames = 0;
  let scheduled = false;
  function frame() {
    scheduled = false;
    renderer.render(scene, camera);
    window.orbitforgeFrames += 1;
    pendingFrames -= 1;
    if (pendingFrames > 0) schedule();
  }
  function schedule() {
    if (!scheduled) {
      scheduled = true;
      requestAnimationFrame(frame);
    }
  }
  function requestRender(frames = 2) {
    pendingFrames = Math.max(pendingFrames, frames);
    schedule();
  }
  controls.addEventListener("change", () => requestRender());
  // the canvas follows its box (the header and strip fill in later, the window may resize)
  new ResizeObserver(() => {
    if (!viewport.clientWidth || !viewport.clientHeight) return;
    camera.aspect = viewport.clientWidth / viewport.clientHeight;
    camera.updateProjectionMatrix();
    renderer.setSize(viewport.clientWidth, viewport.clientHeight, false);
    requestRender();
  }).observe(viewport);

  const shown = initialLayers(data);
  const layers = {};
  const loads = [];

  if (data.mesh) {
    const group = new THREE.Group();
    group.matrixAutoUpdate = false;
    group.matrix.fromArray(data.mesh.toWorld); // column-major: GLB file frame -> the run's world
    layers.mesh = group;
    loads.push(new Promise((resolve, reject) => {
      const bytes = decodeBase64(data.mesh.glb);
      new GLTFLoader().parse(bytes.buffer, "", (gltf) => { group.add(gltf.scene); resolve(); },
        (error) => reject(new Error(`the mesh (asset.glb) did not load: ${error.message || error}`)));
    }));
  }
  if (data.splats) {
    const spark = new SparkRenderer({ renderer, onDirty: () => requestRender() });
    scene.add(spark);
    const splats = new SplatMesh({ fileBytes: decodeBase64(data.splats.bytes), fileType: SplatFileType.SPLAT });
    layers.splats = splats;
    loads.push(splats.initialized);
  }
  if (data.cameras && data.cameras.length) {
    layers.cameras = frustumLines(data.cameras);
  }
  for (const [name, object] of Object.entries(layers)) {
    object.visible = shown.has(name);
    scene.add(object);
  }

  const strip = document.getElementById("frames");
  const toggles = el("div", { class: "layers" });
  for (const name of LAYERS) {
    if (!layers[name]) continue;
    const box = el("input", { type: "checkbox", id: `layer-${name}` });
    box.checked = layers[name].visible;
    box.addEventListener("change", () => { layers[name].visible = box.checked; requestRender(6); });
    toggles.appendChild(el("label", {}, [box, document.createTextNode(` ${name}`)]));
  }
  const reset = el("button", { type: "button", id: "reset-view", text: "reset view" });
  reset.addEventListener("click", () => {
    camera.position.fromArray(view.eye);
    camera.fov = 50;
    camera.updateProjectionMatrix();
    controls.target.fromArray(view.target);
    controls.update();
    for (const img of strip.children) img.classList.remove("selected");
    requestRender();
  });
  toggles.appendChild(reset);
  header.appendChild(toggles);
  if (!Object.keys(layers).length && !(data.frames || []).length) {
    header.appendChild(el("p", { class: "missing", text: "This run has no mesh, splats, cameras or frames yet." }));
  }

  // the clip as a strip of thumbnails; a click looks through that frame's camera
  (data.frames || []).forEach((frameInfo, i) => {
    const img = el("img", { src: frameInfo.thumb, title: frameInfo.label, alt: frameInfo.label });
    if (frameInfo.camera !== null && frameInfo.camera !== undefined) {
      img.classList.add("posed");
      img.addEventListener("click", () => lookThrough(data.cameras[frameInfo.camera], img));
    }
    strip.appendChild(img);
  });
  if (!strip.childElementCount) strip.remove();

  function lookThrough(cam, img) {
    const pose = new THREE.Matrix4().fromArray(cam.c2wGl); // column-major, OpenGL camera axes
    pose.decompose(camera.position, camera.quaternion, new THREE.Vector3());
    camera.fov = cam.fovY;
    camera.updateProjectionMatrix();
    const forward = new THREE.Vector3(0, 0, -1).applyQuaternion(camera.quaternion);
    const distance = camera.position.distanceTo(new THREE.Vector3().fromArray(view.target));
    controls.target.copy(camera.position).addScaledVector(forward, distance);
    controls.update();
    for (const other of strip.children) other.classList.toggle("selected", other === img);
    requestRender();
  }

  Promise.all(loads).then(() => {
    // ready after a few drawn frames; with splats, also after Spark has sorted them once
    const start = window.orbitforgeFrames;
    requestRender(FRAMES_BEFORE_READY);
    const check = () => {
      const drawn = window.orbitforgeFrames - start >= FRAMES_BEFORE_READY;
      if (drawn && pendingFrames <= 0) window.orbitforgeReady = true;
      else setTimeout(check, 50);
    };
    check();
  }).catch((error) => {
    window.orbitforgeError = String(error.message || error);
    header.appendChild(el("p", { class: "missing", text: window.orbitforgeError }));
    console.error(error);
  });
  requestRender();
}

main();
