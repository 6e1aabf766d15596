// trustmap flow graph: zoom and pan, filters by namespace and verdict, edge details.
// Written for this page; no library, no network.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("graph-data").textContent);
  var svg = document.getElementById("graph");
  var details = document.getElementById("details");
  var full = svg.viewBox.baseVal;
  var view = { x: full.x, y: full.y, w: full.width, h: full.height };
  var hiddenGroups = {};
  var hiddenVerdicts = {};

  function setView() {
    svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h);
  }

  function zoom(factor, cx, cy) {
    var nw = Math.min(Math.max(view.w * factor, full.width / 20), full.width * 4);
    var f = nw / view.w;
    view.x = cx - (cx - view.x) * f;
    view.y = cy - (cy - view.y) * f;
    view.w = nw;
    view.h = view.h * f;
    setView();
  }

  function toGraph(evt) {
    var r = svg.getBoundingClientRect();
    var scale = Math.max(view.w / r.width, view.h / r.height);
    var ox = (r.width * scale - view.w) / 2;
    var oy = (r.height * scale - view.h) / 2;
    return {
      x: view.x - ox + (evt.clientX - r.left) * scale,
      y: view.y - oy + (evt.clientY - r.top) * scale,
      scale: scale
    };
  }

  svg.addEventListener("wheel", function (evt) {
    evt.preventDefault();
    var p = toGraph(evt);
    zoom(evt.deltaY > 0 ? 1.15 : 1 / 1.15, p.x, p.y);
  }, { passive: false });

  var drag = null;
  svg.addEventListener("pointerdown", function (evt) {
    if (evt.target.closest(".edge")) return;
    drag = { x: evt.clientX, y: evt.clientY, vx: view.x, vy: view.y, s: toGraph(evt).scale };
    svg.classList.add("dragging");
  });
  window.addEventListener("pointermove", function (evt) {
    if (!drag) return;
    view.x = drag.vx - (evt.clientX - drag.x) * drag.s;
    view.y = drag.vy - (evt.clientY - drag.y) * drag.s;
    setView();
  });
  window.addEventListener("pointerup", function () {
    drag = null;
    svg.classList.remove("dragging");
  });

  function center() {
    return { x: view.x + view.w / 2, y: view.y + view.h / 2 };
  }
  document.getElementById("zoom-in").onclick = function () {
    var c = center(); zoom(1 / 1.3, c.x, c.y);
  };
  document.getElementById("zoom-out").onclick = function () {
    var c = center(); zoom(1.3, c.x, c.y);
  };
  document.getElementById("zoom-fit").onclick = function () {
    view = { x: full.x, y: full.y, w: full.width, h: full.height };
    setView();
  };

  function apply() {
    svg.querySelectorAll(".node, .group").forEach(function (el) {
      el.classList.toggle("hidden", !!hiddenGroups[el.dataset.group]);
    });
    svg.querySelectorAll(".edge, .edge-label").forEach(function (el) {
      var e = data.edges[+el.dataset.edge];
      var hide = hiddenVerdicts[e.verdict] ||
        hiddenGroups[data.nodes[e.src].group] || hiddenGroups[data.nodes[e.dst].group];
      el.classList.toggle("hidden", !!hide);
    });
  }

  document.querySelectorAll("input[data-filter]").forEach(function (box) {
    box.addEventListener("change", function () {
      var map = box.dataset.filter === "group" ? hiddenGroups : hiddenVerdicts;
      map[box.value] = !box.checked;
      apply();
    });
  });
  document.getElementById("labels").addEventListener("change", function (evt) {
    svg.classList.toggle("no-labels", !evt.target.checked);
  });

  function text(tag, content, cls) {
    var el = document.createElement(tag);
    el.textContent = content;
    if (cls) el.className = cls;
    return el;
  }

  function show(i) {
    var e = data.edges[i];
    svg.querySelectorAll(".edge.selected").forEach(function (el) {
      el.classList.remove("selected");
    });
    svg.querySelector('.edge[data-edge="' + i + '"]').classList.add("selected");
    details.textContent = "";
    details.appendChild(text("h2", data.nodes[e.src].id + " \u2192 " + data.nodes[e.dst].id));
    details.appendChild(text("p", e.verdict, "verdict v-" + e.verdict));
    e.items.forEach(function (item) {
      var sec = document.createElement("section");
      sec.appendChild(text("h3", item.ports + (item.count ? "  \u00d7" + item.count : "")));
      var ul = document.createElement("ul");
      item.why.forEach(function (w) { ul.appendChild(text("li", w)); });
      sec.appendChild(ul);
      details.appendChild(sec);
    });
  }

  svg.querySelectorAll(".edge").forEach(function (el) {
    el.addEventListener("click", function () { show(+el.dataset.edge); });
  });

  apply();
  document.body.setAttribute("data-rendered",
    svg.querySelectorAll(".node").length + " " + svg.querySelectorAll(".edge").length);
})();
