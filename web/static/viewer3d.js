// The page's 3D viewer: draws a scene (sage_worker/scene3d.py's JSON) with
// three.js. It runs in a sandboxed frame (no access to the page, its cookies
// or its origin) and gets the scene from the page by postMessage.
import * as THREE from "/static/vendor/three/three.module.min.js";

window.addEventListener("message", (event) => {
  if (event.source !== window.parent || typeof event.data !== "string") return;
  draw(JSON.parse(event.data));
}, { once: true });
window.parent.postMessage("viewer3d-ready", "*");

function draw(scene) {
  const renderer = new THREE.WebGLRenderer({ antialias: true });
  renderer.setPixelRatio(window.devicePixelRatio);
  renderer.setClearColor(0xffffff);
  renderer.setSize(window.innerWidth, window.innerHeight);
  document.body.prepend(renderer.domElement);
  const world = new THREE.Scene();
  const [low, high] = scene.bounds.map((p) => new THREE.Vector3(...p));
  const center = low.clone().add(high).multiplyScalar(0.5);
  const radius = Math.max(high.clone().sub(low).length() / 2, 1e-6);
  for (const [kind, fields] of scene.objects) {
    const object = { surface, line, point, text }[kind]?.(fields, radius);
    if (object) world.add(object);
  }
  world.add(new THREE.Box3Helper(new THREE.Box3(low, high), 0x888888));  // Sage's frame
  world.add(new THREE.AmbientLight(0xffffff, 0.55));
  const camera = new THREE.PerspectiveCamera(30, window.innerWidth / window.innerHeight,
                                             radius / 100, radius * 100);
  camera.up.set(0, 0, 1);  // z up, as Sage draws it
  camera.add(new THREE.DirectionalLight(0xffffff, 1.6));
  world.add(camera);
  const view = { theta: Math.PI / 4, phi: Math.PI / 3, distance: radius * 4 };
  const home = { ...view };
  const render = () => {
    camera.position.set(
      center.x + view.distance * Math.sin(view.phi) * Math.cos(view.theta),
      center.y + view.distance * Math.sin(view.phi) * Math.sin(view.theta),
      center.z + view.distance * Math.cos(view.phi));
    camera.lookAt(center);
    renderer.render(world, camera);
  };
  orbit(renderer.domElement, view, home, render);
  window.addEventListener("resize", () => {
    camera.aspect = window.innerWidth / window.innerHeight;
    camera.updateProjectionMatrix();
    renderer.setSize(window.innerWidth, window.innerHeight);
    render();
  });
  render();
  document.body.dataset.drawn = String(scene.objects.length);
}

function material(fields) {
  const opacity = fields.opacity ?? 1;
  return { color: new THREE.Color(fields.color || "#6666ff"), opacity,
           transparent: opacity < 1 };
}

function surface(fields) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.Float32BufferAttribute(fields.vertices, 3));
  const index = [];
  for (const face of fields.faces) {  // polygons as fans of triangles
    for (let i = 1; i + 1 < face.length; i++) index.push(face[0], face[i], face[i + 1]);
  }
  geometry.setIndex(index);
  geometry.computeVertexNormals();
  return new THREE.Mesh(geometry, new THREE.MeshPhongMaterial(
    { ...material(fields), side: THREE.DoubleSide, shininess: 30 }));
}

function line(fields) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.Float32BufferAttribute(fields.points, 3));
  return new THREE.Line(geometry, new THREE.LineBasicMaterial(material(fields)));
}

function point(fields) {
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute("position", new THREE.Float32BufferAttribute(fields.point, 3));
  return new THREE.Points(geometry, new THREE.PointsMaterial(
    { ...material(fields), size: Math.max(fields.size || 5, 1) / 2, sizeAttenuation: false }));
}

function text(fields, radius) {
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d");
  const size = 48;
  context.font = `${size}px sans-serif`;
  canvas.width = Math.ceil(context.measureText(fields.text).width) + 8;
  canvas.height = size + 12;
  context.font = `${size}px sans-serif`;
  context.fillStyle = fields.color || "#000000";
  context.fillText(fields.text, 4, size);
  const sprite = new THREE.Sprite(new THREE.SpriteMaterial(
    { map: new THREE.CanvasTexture(canvas), transparent: true }));
  const height = radius * 0.08 * ((fields.fontSize || 14) / 14);
  sprite.scale.set(height * canvas.width / canvas.height, height, 1);
  sprite.position.set(...fields.position);
  return sprite;
}

// Drag turns the scene around its centre, the wheel zooms, a double click
// goes back to the first view.
function orbit(element, view, home, render) {
  let last = null;
  element.addEventListener("pointerdown", (e) => {
    last = [e.clientX, e.clientY];
    element.setPointerCapture(e.pointerId);
  });
  element.addEventListener("pointerup", () => { last = null; });
  element.addEventListener("pointermove", (e) => {
    if (!last) return;
    view.theta -= (e.clientX - last[0]) * 0.01;
    view.phi = Math.min(Math.max(view.phi - (e.clientY - last[1]) * 0.01, 0.05), Math.PI - 0.05);
    last = [e.clientX, e.clientY];
    render();
  });
  element.addEventListener("wheel", (e) => {
    e.preventDefault();
    view.distance *= Math.exp(e.deltaY * 0.001);
    render();
  }, { passive: false });
  element.addEventListener("dblclick", () => { Object.assign(view, home); render(); });
}
