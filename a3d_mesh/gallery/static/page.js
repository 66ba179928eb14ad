/* a3d-mesh run page: loads every <model-viewer>, counts what loaded, turns them all together.
   Data comes from the page's JSON block (#a3d-data), never from markup the manifest wrote. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("a3d-data").textContent);
  var body = document.body;
  var status = document.getElementById("viewer-status");
  var howto = document.getElementById("viewer-howto");
  var viewers = Array.prototype.slice.call(document.querySelectorAll("model-viewer[data-index]"));
  var counts = { total: viewers.length, loaded: 0, failed: 0 };
  var errors = [];

  // The page reports on itself (body data-* attributes) so a test or a person can see it worked.
  function report() {
    body.setAttribute("data-models-total", String(counts.total));
    body.setAttribute("data-models-loaded", String(counts.loaded));
    body.setAttribute("data-models-failed", String(counts.failed));
    if (!status || !counts.total) return;
    var text = "3D: " + counts.loaded + " of " + counts.total + " models loaded";
    if (counts.failed) text += ", " + counts.failed + " failed (" + errors.join("; ") + ")";
    status.textContent = text;
  }

  function fail(mv, why) {
    if (mv.getAttribute("data-state")) return;
    mv.setAttribute("data-state", "error");
    counts.failed += 1;
    errors.push(data.models[Number(mv.getAttribute("data-index"))].name + ": " + why);
    report();
  }

  report();
  if (!counts.total) return;
  if (!window.customElements || !window.customElements.get("model-viewer")) {
    // The copied viewer script is missing or did not run: show the turnarounds instead.
    body.classList.add("no-viewer");
    if (howto) howto.hidden = false;
    viewers.forEach(function (mv) { fail(mv, "viewer script not loaded"); });
    return;
  }

  var fromDisk = window.location.protocol === "file:";
  viewers.forEach(function (mv) {
    var model = data.models[Number(mv.getAttribute("data-index"))];
    mv.addEventListener("load", function () {
      if (mv.getAttribute("data-state")) return;
      mv.setAttribute("data-state", "loaded");
      counts.loaded += 1;
      report();
    });
    mv.addEventListener("error", function (ev) {
      var d = ev.detail || {};
      fail(mv, String(d.type || "error") + (d.sourceError ? " " + String(d.sourceError) : ""));
    });
    if (!fromDisk) {
      mv.src = model.src;
    } else if (!model.sidecar) {
      fail(mv, "too large to open from disk; serve it with a3d-mesh view");
    } else {
      // Browsers refuse fetch() of file:// URLs; a classic script may still be loaded.
      var s = document.createElement("script");
      s.src = model.sidecar;
      s.onerror = function () { fail(mv, "missing " + model.sidecar + "; rewrite the page with a3d-mesh view"); };
      document.body.appendChild(s);
    }
  });

  // Called by each sidecar script (page opened from disk) with its GLB, base64.
  window.a3dModel = function (name, b64) {
    viewers.forEach(function (mv) {
      if (data.models[Number(mv.getAttribute("data-index"))].name !== name) return;
      var bin = window.atob(b64);
      var bytes = new Uint8Array(bin.length);
      for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      mv.src = URL.createObjectURL(new Blob([bytes], { type: "model/gltf-binary" }));
    });
  };

  // One camera for all: every viewer gets the same orbit, so the set keeps its true relative
  // sizes and turns in lockstep. A drag in one viewer is copied to the others; the shared
  // turn pauses while someone is dragging.
  var cam = data.camera;
  var rad = Math.PI / 180;
  var home = { theta: cam.theta_deg * rad, phi: cam.phi_deg * rad, radius: cam.distance_m };
  var orbit = { theta: home.theta, phi: home.phi, radius: home.radius };
  var lastUser = -Infinity;
  var applying = false;
  var turn = document.getElementById("turn");
  var reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  if (turn && reduce) turn.checked = false;

  function apply(except) {
    var value = orbit.theta + "rad " + orbit.phi + "rad " + orbit.radius + "m";
    applying = true;
    viewers.forEach(function (mv) {
      if (mv === except) return;
      mv.cameraOrbit = value;
      if (mv.jumpCameraToGoal) mv.jumpCameraToGoal();
    });
    applying = false;
  }

  viewers.forEach(function (mv) {
    mv.addEventListener("camera-change", function (ev) {
      if (applying || !ev.detail || ev.detail.source !== "user-interaction") return;
      var o = mv.getCameraOrbit();
      orbit = { theta: o.theta, phi: o.phi, radius: o.radius };
      lastUser = performance.now();
      apply(mv);
    });
  });

  var reset = document.getElementById("reset-view");
  if (reset) reset.addEventListener("click", function () {
    orbit = { theta: home.theta, phi: home.phi, radius: home.radius };
    apply(null);
  });

  var prev = null;
  function tick(t) {
    if (prev !== null && turn && turn.checked && t - lastUser > 2500) {
      orbit.theta += cam.turn_rad_per_s * Math.min(t - prev, 100) / 1000;
      apply(null);
    }
    prev = t;
    window.requestAnimationFrame(tick);
  }
  window.requestAnimationFrame(tick);
})();
