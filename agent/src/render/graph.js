// trustmap flow map. ELK (elkjs, inlined before this script) computes a layered layout with
// namespaces as groups and orthogonal edge routes; this script draws the SVG itself from those
// positions. Edges by verdict behind toggles, edge labels only on hover or selection (one at a
// time), a search box, a panel with a workload's reach and learned policy, and namespaces
// collapsed into one box each when the graph is large. Written for this page; no network.
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var COLLAPSE_ABOVE = 150; // workloads; above it every namespace starts collapsed
  var NODE_H = 28;
  var PAD = 10;
  var OUTSIDE = "(outside)";
  var ALLOWING = { observed: true, excess: true, allowed: true };
  var TITLES = {
    observed: "allowed and observed",
    excess: "allowed, never observed (excess)",
    denied: "observed, would be denied (refused)",
    allowed: "allowed (no flows given)"
  };

  var data = JSON.parse(document.getElementById("graph-data").textContent);
  var svg = document.getElementById("graph");
  var details = document.getElementById("details");
  var status = document.getElementById("status");
  var elk = new ELK();

  var shown = {};
  document.querySelectorAll("input[data-verdict]").forEach(function (box) {
    shown[box.value] = box.checked;
  });

  // Groups: namespaces by name, the outside last.
  var groups = {};
  data.nodes.forEach(function (n, i) {
    (groups[n.group] = groups[n.group] || []).push(i);
  });
  var groupNames = Object.keys(groups).sort(function (a, b) {
    if ((a === OUTSIDE) !== (b === OUTSIDE)) return a === OUTSIDE ? 1 : -1;
    return a < b ? -1 : a > b ? 1 : 0;
  });
  var collapsed = {};
  var workloads = data.nodes.filter(function (n) { return n.kind === "workload"; }).length;
  if (workloads > COLLAPSE_ABOVE) {
    groupNames.forEach(function (g) { if (groups[g].length > 1) collapsed[g] = true; });
  }

  // Text widths, measured once in the page's own font.
  var measure = document.createElementNS(SVGNS, "text");
  measure.setAttribute("class", "node-label");
  measure.setAttribute("visibility", "hidden");
  svg.appendChild(measure);
  var widths = {};
  function textWidth(s, cls) {
    var key = cls + "\u0000" + s;
    if (!(key in widths)) {
      measure.setAttribute("class", cls);
      measure.textContent = s;
      widths[key] = measure.getComputedTextLength();
    }
    return widths[key];
  }

  function unitOf(i) {
    var g = data.nodes[i].group;
    return collapsed[g] ? "g:" + g : "n:" + i;
  }
  function collapsedLabel(g) {
    var n = groups[g].length;
    return "+ " + g + " (" + n + (g === OUTSIDE ? " peers)" : " workloads)");
  }

  var view = { x: 0, y: 0, w: 100, h: 100 };
  var full = { x: 0, y: 0, w: 100, h: 100 };
  var drawn = null; // what the last render drew
  var selected = null; // { type: "node" | "edge", key }
  var generation = 0;

  function el(tag, attrs, parent) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }

  function elkGraph() {
    var edges = {};
    var internal = 0;
    data.edges.forEach(function (e, i) {
      if (!shown[e.verdict]) return;
      var a = unitOf(e.src);
      var b = unitOf(e.dst);
      if (a === b && a.charAt(0) === "g") { internal++; return; }
      var key = a + "|" + b + "|" + e.verdict;
      (edges[key] = edges[key] || { src: a, dst: b, verdict: e.verdict, idx: [] }).idx.push(i);
    });
    var children = [];
    groupNames.forEach(function (g) {
      if (collapsed[g]) {
        children.push({
          id: "g:" + g,
          width: Math.ceil(textWidth(collapsedLabel(g), "node-label collapsed-label")) + 2 * PAD,
          height: NODE_H + 6
        });
        return;
      }
      var lw = Math.ceil(textWidth(g, "group-label"));
      children.push({
        id: "g:" + g,
        layoutOptions: {
          "elk.padding": "[top=34,left=14,bottom=14,right=14]",
          "elk.nodeSize.constraints": "[MINIMUM_SIZE]",
          "elk.nodeSize.minimum": "(" + (lw + 40) + ",60)"
        },
        children: groups[g].map(function (i) {
          return {
            id: "n:" + i,
            width: Math.ceil(textWidth(data.nodes[i].label, "node-label")) + 2 * PAD,
            height: NODE_H
          };
        })
      });
    });
    var list = Object.keys(edges).map(function (k, j) {
      var e = edges[k];
      e.id = "e" + j;
      return e;
    });
    return {
      internal: internal,
      edges: list,
      graph: {
        id: "root",
        layoutOptions: {
          "elk.algorithm": "layered",
          "elk.direction": "RIGHT",
          "elk.hierarchyHandling": "INCLUDE_CHILDREN",
          "elk.edgeRouting": "ORTHOGONAL",
          "elk.spacing.nodeNode": "18",
          "elk.layered.spacing.nodeNodeBetweenLayers": "48",
          "elk.spacing.edgeNode": "12",
          "elk.layered.spacing.edgeNodeBetweenLayers": "14",
          "elk.spacing.edgeEdge": "6",
          "elk.spacing.componentComponent": "36",
          // Fewer passes on large views: the layout stays interactive (see docs/flow-map.md).
          "elk.layered.thoroughness": list.length > 150 ? "2" : "7"
        },
        children: children,
        edges: list.map(function (e) {
          return { id: e.id, sources: [e.src], targets: [e.dst] };
        })
      }
    };
  }

  function layout() {
    var gen = ++generation;
    status.textContent = "laying out\u2026";
    var g = elkGraph();
    var t0 = performance.now();
    return elk.layout(g.graph).then(function (out) {
      if (gen !== generation) return;
      draw(g, out);
      status.textContent = "";
      document.body.setAttribute("data-layout-ms", Math.round(performance.now() - t0));
      selfCheck(g);
    }).catch(function (err) {
      status.textContent = "layout failed: " + err;
      document.body.setAttribute("data-selfcheck", JSON.stringify({ error: String(err) }));
    });
  }

  function draw(g, out) {
    var abs = { root: { x: 0, y: 0 } };
    var boxes = {};
    (function walk(n, ox, oy) {
      (n.children || []).forEach(function (c) {
        var b = { x: ox + c.x, y: oy + c.y, w: c.width, h: c.height, leaf: !c.children };
        abs[c.id] = b;
        boxes[c.id] = b;
        walk(c, b.x, b.y);
      });
    })(out, 0, 0);
    var byId = {};
    g.edges.forEach(function (e) { byId[e.id] = e; });

    svg.querySelectorAll(".layer").forEach(function (l) { l.remove(); });
    var lGroups = el("g", { "class": "layer" }, svg);
    var lEdges = el("g", { "class": "layer" }, svg);
    var lNodes = el("g", { "class": "layer" }, svg);
    var lTip = el("g", { "class": "layer" }, svg);

    groupNames.forEach(function (name) {
      var b = boxes["g:" + name];
      if (!b) return;
      if (collapsed[name]) {
        var gn = el("g", { "class": "node collapsed", "data-unit": "g:" + name }, lNodes);
        el("title", {}, gn).textContent = name + ": click to expand";
        el("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, gn);
        var t = el("text", { "class": "node-label collapsed-label", x: b.x + PAD, y: b.y + b.h / 2 + 4 }, gn);
        t.textContent = collapsedLabel(name);
        gn.addEventListener("click", function (evt) {
          evt.stopPropagation();
          collapsed[name] = false;
          layout();
        });
        return;
      }
      var gg = el("g", { "class": "group", "data-group": name }, lGroups);
      el("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 6 }, gg);
      var head = el("text", { "class": "group-label", x: b.x + 14, y: b.y + 21 }, gg);
      head.textContent = name;
      if (groups[name].length > 1) {
        el("title", {}, head).textContent = "click to collapse " + name;
        head.addEventListener("click", function (evt) {
          evt.stopPropagation();
          collapsed[name] = true;
          layout();
        });
      }
    });

    var paths = [];
    (out.edges || []).forEach(function (oe) {
      var e = byId[oe.id];
      var off = abs[oe.container || "root"] || abs.root;
      var d = "";
      (oe.sections || []).forEach(function (s) {
        var pts = [s.startPoint].concat(s.bendPoints || [], [s.endPoint]);
        pts.forEach(function (p, k) {
          d += (k === 0 ? "M" : "L") + (p.x + off.x).toFixed(1) + "," + (p.y + off.y).toFixed(1);
        });
      });
      var key = e.src + "|" + e.dst + "|" + e.verdict;
      var p = el("path", {
        "class": "edge v-" + e.verdict,
        d: d,
        stroke: colour(e.verdict),
        "marker-end": "url(#arrow-" + e.verdict + ")",
        "data-edges": e.idx.join(","),
        "data-key": key
      }, lEdges);
      var hit = el("path", { "class": "edge-hit", d: d, "data-key": key }, lEdges);
      hit.addEventListener("pointerenter", function () { tip(key); });
      hit.addEventListener("pointerleave", function () { tip(selected && selected.type === "edge" ? selected.key : null); });
      hit.addEventListener("click", function (evt) { evt.stopPropagation(); selectEdge(key); });
      paths.push({ key: key, edge: e, path: p });
    });

    groupNames.forEach(function (name) {
      if (collapsed[name]) return;
      groups[name].forEach(function (i) {
        var b = boxes["n:" + i];
        if (!b) return;
        var n = data.nodes[i];
        var gn = el("g", { "class": "node k-" + n.kind, "data-unit": "n:" + i, "data-node": i }, lNodes);
        el("title", {}, gn).textContent = n.id;
        el("rect", { x: b.x, y: b.y, width: b.w, height: b.h, rx: 5 }, gn);
        var t = el("text", { "class": "node-label", x: b.x + PAD, y: b.y + b.h / 2 + 4 }, gn);
        t.textContent = n.label;
        gn.addEventListener("click", function (evt) { evt.stopPropagation(); selectNode(i); });
      });
    });

    var tipG = el("g", { id: "edge-tip", "class": "hidden" }, lTip);
    el("rect", { rx: 3 }, tipG);
    el("text", {}, tipG);

    drawn = { boxes: boxes, paths: paths, edges: g.edges };
    full = { x: -20, y: -20, w: (out.width || 100) + 40, h: (out.height || 100) + 40 };
    home();
    restoreSelection();
  }

  function colour(v) {
    var s = document.querySelector('input[data-verdict][value="' + v + '"]');
    return s ? s.dataset.colour : "#6c7a89";
  }

  // ---- the one edge label: on hover, or for the selected edge ----
  function edgeText(e) {
    var parts = [];
    e.idx.forEach(function (i) {
      data.edges[i].items.forEach(function (it) {
        parts.push(it.count ? it.ports + " \u00d7" + it.count : it.ports);
      });
    });
    var s = parts.slice(0, 4).join(", ");
    if (parts.length > 4) s += " +" + (parts.length - 4) + " more";
    return s;
  }
  function tip(key) {
    var g = document.getElementById("edge-tip");
    if (!g) return;
    var p = key && drawn.paths.filter(function (x) { return x.key === key; })[0];
    if (!p) { g.setAttribute("class", "hidden"); return; }
    var len = p.path.getTotalLength();
    var at = p.path.getPointAtLength(len / 2);
    var t = g.querySelector("text");
    t.textContent = edgeText(p.edge);
    t.setAttribute("x", at.x);
    t.setAttribute("y", at.y - 8);
    t.setAttribute("fill", colour(p.edge.verdict));
    g.setAttribute("class", "");
    var bb = t.getBBox();
    var r = g.querySelector("rect");
    r.setAttribute("x", bb.x - 4);
    r.setAttribute("y", bb.y - 2);
    r.setAttribute("width", bb.width + 8);
    r.setAttribute("height", bb.height + 4);
  }

  // ---- zoom and pan ----
  // The default view fits the whole map when its labels stay readable (at least MIN_SCALE of
  // their size), and otherwise starts at that scale on the map's left edge, where the layers
  // begin, centred vertically; "fit" shows everything.
  var MIN_SCALE = 0.8;
  function home() {
    var r = svg.getBoundingClientRect();
    var fit = Math.min(r.width / full.w, r.height / full.h);
    if (!(fit < MIN_SCALE)) {
      view = { x: full.x, y: full.y, w: full.w, h: full.h };
    } else {
      var w = r.width / MIN_SCALE;
      var h = r.height / MIN_SCALE;
      view = { x: full.x, y: full.y + Math.max(0, (full.h - h) / 2), w: w, h: h };
    }
    setView();
  }
  function setView() {
    svg.setAttribute("viewBox", view.x + " " + view.y + " " + view.w + " " + view.h);
  }
  function zoom(factor, cx, cy) {
    var nw = Math.min(Math.max(view.w * factor, full.w / 40), full.w * 4);
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
    if (evt.target.closest(".edge-hit, .node, .group-label")) return;
    drag = { x: evt.clientX, y: evt.clientY, vx: view.x, vy: view.y, s: toGraph(evt).scale, moved: false };
    svg.classList.add("dragging");
  });
  window.addEventListener("pointermove", function (evt) {
    if (!drag) return;
    drag.moved = true;
    view.x = drag.vx - (evt.clientX - drag.x) * drag.s;
    view.y = drag.vy - (evt.clientY - drag.y) * drag.s;
    setView();
  });
  window.addEventListener("pointerup", function () {
    svg.classList.remove("dragging");
    setTimeout(function () { drag = null; }, 0);
  });
  svg.addEventListener("click", function () {
    if (drag && drag.moved) return;
    clearSelection();
  });
  function center() { return { x: view.x + view.w / 2, y: view.y + view.h / 2 }; }
  document.getElementById("zoom-in").onclick = function () { var c = center(); zoom(1 / 1.3, c.x, c.y); };
  document.getElementById("zoom-out").onclick = function () { var c = center(); zoom(1.3, c.x, c.y); };
  document.getElementById("zoom-fit").onclick = function () {
    view = { x: full.x, y: full.y, w: full.w, h: full.h };
    setView();
  };
  document.getElementById("expand-all").onclick = function () { collapsed = {}; layout(); };
  document.getElementById("collapse-all").onclick = function () {
    groupNames.forEach(function (g) { if (groups[g].length > 1) collapsed[g] = true; });
    layout();
  };
  document.querySelectorAll("input[data-verdict]").forEach(function (box) {
    box.addEventListener("change", function () { shown[box.value] = box.checked; layout(); });
  });

  // ---- selection, reach and the panel ----
  function text(tag, content, cls) {
    var e = document.createElement(tag);
    e.textContent = content;
    if (cls) e.className = cls;
    return e;
  }
  function clearSelection() {
    selected = null;
    document.body.removeAttribute("data-selected");
    svg.classList.remove("focus");
    svg.querySelectorAll(".hl").forEach(function (e) { e.classList.remove("hl"); });
    tip(null);
    details.textContent = "";
    details.appendChild(text("p", "Click a workload for its reach and learned policy, or an edge for its ports and rules. Search finds a workload. Scroll to zoom, drag to pan, click a namespace's name to collapse it."));
  }
  function restoreSelection() {
    var s = selected;
    clearSelection();
    if (!s) return;
    if (s.type === "node") selectNode(s.key);
    else if (drawn.paths.some(function (p) { return p.key === s.key; })) selectEdge(s.key);
  }

  function selectEdge(key) {
    clearSelection();
    selected = { type: "edge", key: key };
    var p = drawn.paths.filter(function (x) { return x.key === key; })[0];
    svg.classList.add("focus");
    svg.querySelectorAll('[data-key="' + CSS.escape(key) + '"]').forEach(function (e) { e.classList.add("hl"); });
    [p.edge.src, p.edge.dst].forEach(function (u) {
      var n = svg.querySelector('.node[data-unit="' + CSS.escape(u) + '"]');
      if (n) n.classList.add("hl");
    });
    tip(key);
    details.textContent = "";
    p.edge.idx.forEach(function (i) {
      var e = data.edges[i];
      details.appendChild(text("h2", data.nodes[e.src].id + " \u2192 " + data.nodes[e.dst].id));
      details.appendChild(text("p", TITLES[e.verdict], "verdict v-" + e.verdict));
      e.items.forEach(function (item) {
        details.appendChild(text("h3", item.ports + (item.count ? "  \u00d7" + item.count : "")));
        var ul = document.createElement("ul");
        item.why.forEach(function (w) { ul.appendChild(text("li", w)); });
        details.appendChild(ul);
      });
    });
  }

  var indexOf = {};
  data.nodes.forEach(function (n, i) { indexOf[n.id] = i; });

  function selectNode(i) {
    clearSelection();
    selected = { type: "node", key: i };
    document.body.setAttribute("data-selected", data.nodes[i].id);
    var n = data.nodes[i];
    // The blast radius comes with the model: what the policies allow, followed transitively
    // (as `trustmap blast-radius` computes it).
    var blast = (data.blast || {})[n.id];
    svg.classList.add("focus");
    var mark = function (j) {
      var u = svg.querySelector('.node[data-unit="' + CSS.escape(unitOf(j)) + '"]');
      if (u) u.classList.add("hl");
    };
    mark(i);
    var reached = {};
    (blast ? blast.reached : []).forEach(function (r) {
      if (r[0] in indexOf) { reached[indexOf[r[0]]] = true; mark(indexOf[r[0]]); }
    });
    drawn.paths.forEach(function (p) {
      var touches = p.edge.idx.some(function (k) {
        var e = data.edges[k];
        return e.src === i || e.dst === i || (ALLOWING[e.verdict] && e.src in reached);
      });
      if (touches) {
        svg.querySelectorAll('[data-key="' + CSS.escape(p.key) + '"]').forEach(function (e) { e.classList.add("hl"); });
      }
    });

    details.textContent = "";
    details.appendChild(text("h2", n.id));
    details.appendChild(text("p", n.kind + (n.group === OUTSIDE ? "" : " in namespace " + n.group)));
    var section = function (title, list) {
      details.appendChild(text("h3", title));
      if (!list.length) { details.appendChild(text("p", "none", "muted")); return; }
      var ul = document.createElement("ul");
      list.slice(0, 60).forEach(function (s) { ul.appendChild(text("li", s)); });
      if (list.length > 60) ul.appendChild(text("li", "\u2026 and " + (list.length - 60) + " more"));
      details.appendChild(ul);
    };
    var edgeLine = function (e, peer) {
      var ports = e.items.map(function (it) { return it.count ? it.ports + " \u00d7" + it.count : it.ports; });
      return peer + ": " + ports.join(", ") + " (" + e.verdict + ")";
    };
    section("Talks to", data.edges.filter(function (e) { return e.src === i; })
      .map(function (e) { return edgeLine(e, data.nodes[e.dst].id); }));
    section("Reached by", data.edges.filter(function (e) { return e.dst === i; })
      .map(function (e) { return edgeLine(e, data.nodes[e.src].id); }));
    details.appendChild(text("h3", "Blast radius"));
    if (blast) {
      details.appendChild(text("p", "If compromised, it may connect to " + blast.reach_pods + " pod" +
        (blast.reach_pods === 1 ? "" : "s") + " directly and " + blast.transitive_pods +
        " by hopping (" + blast.hops.map(function (h, k) { return (k + 1) + " hop" + (k ? "s" : "") + ": " + h; }).join(", ") +
        ")" + (blast.reach_external ? ", and outside the cluster" : "") + "; " + blast.reached_by_pods +
        " pod" + (blast.reached_by_pods === 1 ? "" : "s") + " may connect to it. By the policies, not the traffic.", "blast"));
      var far = blast.reached.map(function (r) { return r[0] + (r[1] > 1 ? " (" + r[1] + " hops)" : ""); });
      if (blast.reached_total > far.length) far.push("\u2026 and " + (blast.reached_total - far.length) + " more");
      section("Reachable", far);
    } else {
      details.appendChild(text("p", "not a workload in the cluster", "muted"));
    }
    details.appendChild(text("h3", "Learned policy"));
    var pol = (data.policies || {})[n.id];
    if (pol) details.appendChild(text("pre", pol, "policy"));
    else details.appendChild(text("p", data.with_flows ? "none learned (not a workload, or no observed traffic)" : "none: no flows were given", "muted"));
  }

  // ---- search ----
  var list = document.getElementById("workload-list");
  data.nodes.forEach(function (n) { var o = document.createElement("option"); o.value = n.id; list.appendChild(o); });
  function find(term) {
    term = term.trim().toLowerCase();
    if (!term) return -1;
    for (var i = 0; i < data.nodes.length; i++) if (data.nodes[i].id.toLowerCase() === term) return i;
    for (var j = 0; j < data.nodes.length; j++) if (data.nodes[j].id.toLowerCase().indexOf(term) >= 0) return j;
    return -1;
  }
  function focusNode(i) {
    var b = drawn.boxes[unitOf(i)];
    if (!b) return;
    var w = Math.min(full.w, Math.max(600, b.w * 6));
    var h = w * (full.h / full.w);
    view = { x: b.x + b.w / 2 - w / 2, y: b.y + b.h / 2 - h / 2, w: w, h: h };
    setView();
  }
  function go(term) {
    var i = find(term);
    if (i < 0) { status.textContent = "no workload matches \u201c" + term + "\u201d"; return; }
    status.textContent = "";
    var g = data.nodes[i].group;
    selected = { type: "node", key: i };
    if (collapsed[g]) {
      collapsed[g] = false;
      layout().then(function () { focusNode(i); });
    } else {
      selectNode(i);
      focusNode(i);
    }
  }
  var search = document.getElementById("search");
  search.addEventListener("change", function () { go(search.value); });
  search.addEventListener("keydown", function (evt) { if (evt.key === "Enter") go(search.value); });

  // ---- the self-check the browser tests read ----
  function overlap(a, b) {
    return a.x < b.x + b.width - 0.5 && b.x < a.x + a.width - 0.5 &&
      a.y < b.y + b.height - 0.5 && b.y < a.y + a.height - 0.5;
  }
  function selfCheck(g) {
    var labels = Array.prototype.slice.call(svg.querySelectorAll(".layer text.node-label, .layer text.group-label"))
      .map(function (t) { return { box: t.getBBox(), text: t.textContent, node: t.parentNode }; });
    var overlaps = [];
    for (var a = 0; a < labels.length; a++) {
      for (var b = a + 1; b < labels.length; b++) {
        if (overlap(labels[a].box, labels[b].box)) overlaps.push(labels[a].text + " / " + labels[b].text);
      }
    }
    // Every node label inside its own box; no two boxes overlap.
    var outside = [];
    var rects = [];
    labels.forEach(function (l) {
      if (!l.node.classList.contains("node")) return;
      var r = l.node.querySelector("rect").getBBox();
      rects.push({ box: r, text: l.text });
      var t = l.box;
      if (t.x < r.x || t.y < r.y || t.x + t.width > r.x + r.width || t.y + t.height > r.y + r.height) outside.push(l.text);
    });
    for (var c = 0; c < rects.length; c++) {
      for (var d = c + 1; d < rects.length; d++) {
        if (overlap(rects[c].box, rects[d].box)) overlaps.push("box " + rects[c].text + " / " + rects[d].text);
      }
    }
    // Edges that cross a box that is neither of their ends.
    var crossings = [];
    drawn.paths.forEach(function (p) {
      var pts = (p.path.getAttribute("d").match(/-?[0-9.]+,-?[0-9.]+/g) || []).map(function (s) {
        var xy = s.split(",");
        return { x: +xy[0], y: +xy[1] };
      });
      Object.keys(drawn.boxes).forEach(function (u) {
        var bx = drawn.boxes[u];
        if (!bx.leaf || u === p.edge.src || u === p.edge.dst) return;
        for (var k = 1; k < pts.length; k++) {
          var x0 = Math.min(pts[k - 1].x, pts[k].x), x1 = Math.max(pts[k - 1].x, pts[k].x);
          var y0 = Math.min(pts[k - 1].y, pts[k].y), y1 = Math.max(pts[k - 1].y, pts[k].y);
          if (x0 < bx.x + bx.w - 1 && x1 > bx.x + 1 && y0 < bx.y + bx.h - 1 && y1 > bx.y + 1) {
            crossings.push(p.key + " over " + u);
            return;
          }
        }
      });
    });
    var observed = [];
    data.edges.forEach(function (e, i) { if (e.verdict === "observed") observed.push(i); });
    var drawnIdx = {};
    drawn.paths.forEach(function (p) {
      if (p.path.getTotalLength() > 0) p.edge.idx.forEach(function (i) { drawnIdx[i] = true; });
    });
    var hiddenInside = 0;
    var missing = observed.filter(function (i) {
      if (drawnIdx[i]) return false;
      var e = data.edges[i];
      if (!shown.observed) return false;
      if (unitOf(e.src) === unitOf(e.dst) && collapsed[data.nodes[e.src].group]) { hiddenInside++; return false; }
      return true;
    }).map(function (i) { return data.nodes[data.edges[i].src].id + " -> " + data.nodes[data.edges[i].dst].id; });
    var r = svg.getBoundingClientRect();
    var scale = Math.min(r.width / view.w, r.height / view.h);
    var report = {
      layoutMs: +document.body.getAttribute("data-layout-ms"),
      fontPx: Math.round(12 * scale * 10) / 10,
      units: svg.querySelectorAll(".node").length,
      edges: drawn.paths.length,
      labels: labels.length,
      overlaps: overlaps,
      outside: outside,
      crossings: crossings,
      observed: observed.length,
      observedDrawn: observed.filter(function (i) { return drawnIdx[i]; }).length,
      observedInsideCollapsed: hiddenInside,
      observedMissing: missing,
      collapsed: Object.keys(collapsed).filter(function (k) { return collapsed[k]; }).length
    };
    document.body.setAttribute("data-selfcheck", JSON.stringify(report));
    document.body.setAttribute("data-rendered", report.units + " " + report.edges);
  }

  // A link can name a workload to find: page.html#find=ns/Kind/name
  clearSelection();
  var first = layout();
  var m = /^#find=(.+)$/.exec(location.hash);
  if (m) {
    first.then(function () {
      search.value = decodeURIComponent(m[1]);
      go(search.value);
    });
  }
})();
