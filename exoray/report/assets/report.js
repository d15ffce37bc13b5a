/* exoray report: renders window.EXORAY_REPORT (data.js). Hand-written, no libraries, no network.
   Thumbnails come from a few sprite sheets, requested only when a gallery nears the screen;
   the embedding map is drawn on a canvas from map.js, loaded when the map nears the screen. */
(function () {
  "use strict";
  var R = window.EXORAY_REPORT;
  // What the page did, for people debugging a report and for the headless browser test.
  var S = window.EXORAY_STATUS = { sheets: {}, loaded: 0, failed: 0, tiles: 0, rendered: false,
                                   map: "none", mapPoints: 0 };
  var CELL = 128;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  // Text with `code` spans, never parsed as HTML.
  function rich(tag, cls, text) {
    var e = el(tag, cls);
    String(text).split("`").forEach(function (part, i) {
      if (!part) return;
      e.appendChild(i % 2 ? el("code", null, part) : document.createTextNode(part));
    });
    return e;
  }

  // Inline (notebook) views carry their files as data: URIs; a report folder uses the paths.
  function url(path) { return (window.EXORAY_FILES || {})[path] || path; }

  function csvLink(path, count) {
    var a = el("a", "csv", "CSV" + (count !== undefined ? " (" + count + " images)" : ""));
    a.href = url(path);
    a.setAttribute("download", path.split("/").pop());
    return a;
  }

  // -- sprite sheets ----------------------------------------------------------------------------
  var sheets = {};
  function withSheet(i, done) {
    var s = sheets[i];
    if (!s) {
      s = sheets[i] = { state: "loading", waiters: [] };
      S.sheets[R.sheets[i]] = "loading";
      var img = new Image();
      img.onload = function () {
        s.state = "ok"; S.loaded++; S.sheets[R.sheets[i]] = "ok";
        s.waiters.forEach(function (f) { f(); });
        s.waiters = [];
      };
      img.onerror = function () {
        s.state = "error"; S.failed++; S.sheets[R.sheets[i]] = "error";
        console.error("exoray report: sprite sheet " + R.sheets[i] + " did not load");
      };
      img.src = url(R.sheets[i]);
    }
    if (s.state === "ok") done();
    else if (s.state === "loading") s.waiters.push(done);
  }

  // A tile: the thumbnail centred in a CELL square, boxes (normalised x0,y0,x1,y1,label) on top.
  function tile(key, boxes) {
    var t = el("div", "tile");
    var at = R.tiles[key];
    if (!at) { t.className += " none"; return t; }
    var pic = el("div", "pic");
    pic.style.width = at[3] + "px";
    pic.style.height = at[4] + "px";
    pic.dataset.sheet = at[0];
    pic.style.backgroundPosition = (-at[1]) + "px " + (-at[2]) + "px";
    (boxes || []).forEach(function (b) {
      var box = el("div", "box");
      box.style.left = (100 * b[0]) + "%";
      box.style.top = (100 * b[1]) + "%";
      box.style.width = (100 * Math.max(0, b[2] - b[0])) + "%";
      box.style.height = (100 * Math.max(0, b[3] - b[1])) + "%";
      if (b[4]) { box.title = b[4]; box.appendChild(el("span", null, b[4])); }
      pic.appendChild(box);
    });
    t.appendChild(pic);
    return t;
  }

  // Load the sheets of a container's tiles once it nears the screen.
  var lazy = ("IntersectionObserver" in window) ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting) { lazy.unobserve(e.target); fill(e.target); }
    });
  }, { rootMargin: "400px 0px" }) : null;

  function fill(container) {
    container.querySelectorAll(".pic[data-sheet]").forEach(function (pic) {
      var i = +pic.dataset.sheet;
      withSheet(i, function () {
        pic.style.backgroundImage = "url('" + url(R.sheets[i]) + "')";
        S.tiles++;
      });
    });
  }

  function watch(container) {
    if (lazy) lazy.observe(container); else fill(container);
  }

  function item(it) {
    var extra = it.x || [];
    var d = el("div", "item" + (extra.length ? " wide" : ""));
    var pair = el("div", "pair");
    pair.appendChild(tile(it.t, it.b));
    extra.forEach(function (k) { pair.appendChild(tile(k)); });
    d.appendChild(pair);
    if (it.l) d.appendChild(el("div", "label", it.l));
    var p = el("div", "path", it.p);
    p.title = it.p;
    d.appendChild(p);
    return d;
  }

  // -- blocks -----------------------------------------------------------------------------------
  var render = {
    text: function (b) {
      var p = rich("p", null, b.text);
      if (b.csv) p.appendChild(csvLink(b.csv));
      return p;
    },
    table: function (b) {
      var wrap = el("div");
      if (b.title || b.csv) {
        var h = el("h3", null, b.title || "");
        if (b.csv) h.appendChild(csvLink(b.csv));
        wrap.appendChild(h);
      }
      var t = el("table"), head = el("tr");
      b.columns.forEach(function (c) { head.appendChild(el("th", null, c)); });
      t.appendChild(head);
      b.rows.forEach(function (r) {
        var tr = el("tr");
        r.forEach(function (v) { tr.appendChild(el("td", null, v === null ? "" : v)); });
        t.appendChild(tr);
      });
      wrap.appendChild(t);
      return wrap;
    },
    histograms: function (b) {
      var wrap = el("div", "hists");
      b.items.forEach(function (h) {
        var d = el("div", "hist");
        d.appendChild(el("h3", null, h.title + (h.log ? " (log scale)" : "")));
        var max = Math.max.apply(null, h.counts) || 1, w = 250, ht = 80, bw = w / h.counts.length;
        var ns = "http://www.w3.org/2000/svg", svg = document.createElementNS(ns, "svg");
        svg.setAttribute("width", w); svg.setAttribute("height", ht);
        h.counts.forEach(function (c, i) {
          var r = document.createElementNS(ns, "rect"), bh = c ? Math.max(1, ht * c / max) : 0;
          r.setAttribute("x", i * bw); r.setAttribute("width", Math.max(1, bw - 1));
          r.setAttribute("y", ht - bh); r.setAttribute("height", bh);
          r.setAttribute("fill", "#2f6db5");
          var tt = document.createElementNS(ns, "title");
          tt.textContent = c + " images in " + fmt(h.edges[i], h.log) + " .. " +
                           fmt(h.edges[i + 1], h.log);
          r.appendChild(tt);
          svg.appendChild(r);
        });
        d.appendChild(svg);
        var axis = el("div", "axis");
        axis.appendChild(el("span", null, fmt(h.edges[0], h.log)));
        axis.appendChild(el("span", null, h.unit));
        axis.appendChild(el("span", null, fmt(h.edges[h.edges.length - 1], h.log)));
        d.appendChild(axis);
        wrap.appendChild(d);
      });
      return wrap;
    },
    gallery: function (b) {
      var wrap = el("div");
      var h = el("h3", null, b.title);
      h.appendChild(csvLink(b.csv, b.count));
      wrap.appendChild(h);
      var shown = b.items.length < b.count ? "showing " + b.items.length + " of " + b.count : "";
      wrap.appendChild(el("div", "note", [b.note, shown].filter(Boolean).join("; ")));
      var grid = el("div", "grid");
      b.items.forEach(function (it) { grid.appendChild(item(it)); });
      wrap.appendChild(grid);
      watch(grid);
      return wrap;
    },
    groups: function (b) {
      var wrap = el("div");
      var h = el("h3", null, b.title);
      h.appendChild(csvLink(b.csv, b.count));
      wrap.appendChild(h);
      b.groups.forEach(function (g) {
        var d = el("div", "group");
        d.appendChild(el("div", "note", g.title));
        var grid = el("div", "grid");
        g.items.forEach(function (it) { grid.appendChild(item(it)); });
        d.appendChild(grid);
        watch(grid);
        wrap.appendChild(d);
      });
      return wrap;
    },
    map: function (b) { return mapBlock(b); }
  };

  function fmt(v, log) {
    var x = log ? Math.pow(10, v) : v;
    var a = Math.abs(x);
    if (a >= 1e6) return (x / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (x / 1e3).toFixed(1) + "k";
    return a >= 10 ? x.toFixed(0) : a >= 1 ? x.toFixed(2) : x.toPrecision(2);
  }

  // -- the embedding map ------------------------------------------------------------------------
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                 "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79",
                 "#637939", "#8c6d31", "#843c39"];

  function decode(b64, Type) {
    var bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function mapBlock(b) {
    var wrap = el("div", "mapwrap");
    var bar = el("div", "mapbar");
    var select = el("select");
    bar.appendChild(el("span", null, "colour by"));
    bar.appendChild(select);
    var legend = el("div", "legend");
    bar.appendChild(legend);
    wrap.appendChild(bar);
    var canvas = el("canvas");
    wrap.appendChild(canvas);
    wrap.appendChild(el("div", "note", b.note + ". Drag to pan, wheel to zoom, double-click to reset."));
    var started = false;
    function start() {
      if (started) return;
      started = true;
      S.map = "loading";
      if (window.EXORAY_MAP) { drawMap(window.EXORAY_MAP, canvas, select, legend); return; }
      var s = document.createElement("script");
      s.src = b.script;
      s.onload = function () { drawMap(window.EXORAY_MAP, canvas, select, legend); };
      s.onerror = function () { S.map = "error"; console.error("exoray report: " + b.script + " did not load"); };
      document.body.appendChild(s);
    }
    if ("IntersectionObserver" in window) {
      var io = new IntersectionObserver(function (es) {
        if (es.some(function (e) { return e.isIntersecting; })) { io.disconnect(); start(); }
      }, { rootMargin: "400px 0px" });
      io.observe(wrap);
    } else start();
    return wrap;
  }

  function drawMap(M, canvas, select, legend) {
    var n = M.count, xs = decode(M.x, Uint16Array), ys = decode(M.y, Uint16Array);
    var cl = decode(M.cluster, Uint8Array), fl = decode(M.flags, Uint32Array);
    var opts = [["cluster", "cluster"]].concat(M.flagNames.map(function (f, i) { return ["f" + i, f]; }));
    opts.forEach(function (o) { var op = el("option", null, o[1]); op.value = o[0]; select.appendChild(op); });
    var view = { s: 1, ox: 0, oy: 0 }, ctx = canvas.getContext("2d"), W = 0, H = 0, PAD = 12;
    // Grid of points for hover lookups: 64 x 64 cells over the data square.
    var G = 64, cells = new Array(G * G);
    for (var i = 0; i < n; i++) {
      var c = ((xs[i] * G / 65536) | 0) + G * ((ys[i] * G / 65536) | 0);
      (cells[c] || (cells[c] = [])).push(i);
    }
    function toScreen(v, size) { return PAD + (v / 65535) * (size - 2 * PAD); }
    function sx(i) { return (toScreen(xs[i], W) - W / 2) * view.s + W / 2 + view.ox; }
    function sy(i) { return (toScreen(ys[i], H) - H / 2) * view.s + H / 2 + view.oy; }
    function colourOf(i) {
      var mode = select.value;
      if (mode === "cluster") return cl[i] === 255 ? "#999" : PALETTE[cl[i] % PALETTE.length];
      var bit = +mode.slice(1);
      return (fl[i] >>> bit) & 1 ? "#e15759" : "#c9ced6";
    }
    function draw() {
      var r = window.devicePixelRatio || 1;
      W = canvas.clientWidth; H = canvas.clientHeight;
      canvas.width = W * r; canvas.height = H * r;
      ctx.setTransform(r, 0, 0, r, 0, 0);
      ctx.clearRect(0, 0, W, H);
      var size = n > 20000 ? 2 : n > 2000 ? 3 : 5, byColour = {}, on = [];
      for (var i = 0; i < n; i++) {
        var col = colourOf(i);
        if (col === "#e15759") { on.push(i); continue; }  // flagged points drawn last, on top
        (byColour[col] || (byColour[col] = [])).push(i);
      }
      byColour["#e15759"] = on;
      Object.keys(byColour).forEach(function (col) {
        ctx.fillStyle = col;
        byColour[col].forEach(function (i) { ctx.fillRect(sx(i) - size / 2, sy(i) - size / 2, size, size); });
      });
      legend.textContent = "";
      if (select.value === "cluster") {
        var seen = {};
        for (var j = 0; j < n; j++) seen[cl[j]] = (seen[cl[j]] || 0) + 1;
        Object.keys(seen).sort(function (a, b) { return a - b; }).forEach(function (k) {
          var s = el("span"), sw = el("i");
          sw.style.background = +k === 255 ? "#999" : PALETTE[k % PALETTE.length];
          s.appendChild(sw);
          s.appendChild(document.createTextNode((+k === 255 ? "no cluster" : "cluster " + k) + " (" + seen[k] + ")"));
          legend.appendChild(s);
        });
      } else {
        var count = 0, bit = +select.value.slice(1);
        for (var m = 0; m < n; m++) count += (fl[m] >>> bit) & 1;
        legend.textContent = count + " of " + n + " points have " + M.flagNames[bit];
      }
      S.map = "drawn"; S.mapPoints = n;
    }
    function nearest(mx, my) {
      // Screen -> data coordinates, then look in the surrounding grid cells.
      var dx = ((mx - W / 2 - view.ox) / view.s + W / 2 - PAD) / (W - 2 * PAD) * 65535;
      var dy = ((my - H / 2 - view.oy) / view.s + H / 2 - PAD) / (H - 2 * PAD) * 65535;
      var cx = (dx * G / 65536) | 0, cy = (dy * G / 65536) | 0, best = -1, bestD = 100;
      var reach = Math.max(1, Math.ceil(12 / view.s / ((W - 2 * PAD) / G)));
      for (var gx = cx - reach; gx <= cx + reach; gx++) {
        for (var gy = cy - reach; gy <= cy + reach; gy++) {
          if (gx < 0 || gy < 0 || gx >= G || gy >= G) continue;
          (cells[gx + G * gy] || []).forEach(function (i) {
            var d = Math.pow(sx(i) - mx, 2) + Math.pow(sy(i) - my, 2);
            if (d < bestD) { bestD = d; best = i; }
          });
        }
      }
      return best;
    }
    var tip = document.getElementById("tip"), drag = null;
    canvas.addEventListener("mousemove", function (e) {
      var rect = canvas.getBoundingClientRect(), mx = e.clientX - rect.left, my = e.clientY - rect.top;
      if (drag) { view.ox += mx - drag[0]; view.oy += my - drag[1]; drag = [mx, my]; draw(); return; }
      var i = nearest(mx, my);
      if (i < 0) { tip.hidden = true; return; }
      tip.textContent = "";
      var key = M.thumbs[String(i)];
      if (key && R.tiles[key]) { var t = tile(key); tip.appendChild(t); fill(tip); }
      tip.appendChild(el("div", null, M.paths[i]));
      var flags = M.flagNames.filter(function (f, b) { return (fl[i] >>> b) & 1; });
      tip.appendChild(el("div", "note", (cl[i] === 255 ? "" : "cluster " + cl[i]) + (flags.length ? " · " + flags.join(", ") : "")));
      var left = e.clientX + 314 > window.innerWidth ? e.clientX - 314 : e.clientX + 14;
      tip.style.left = Math.max(0, left) + "px"; tip.style.top = (e.clientY + 14) + "px";
      tip.hidden = false;
    });
    canvas.addEventListener("mouseleave", function () { tip.hidden = true; drag = null; });
    canvas.addEventListener("mousedown", function (e) {
      var rect = canvas.getBoundingClientRect(); drag = [e.clientX - rect.left, e.clientY - rect.top];
    });
    window.addEventListener("mouseup", function () { drag = null; });
    canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      var rect = canvas.getBoundingClientRect(), mx = e.clientX - rect.left - W / 2, my = e.clientY - rect.top - H / 2;
      var f = e.deltaY < 0 ? 1.25 : 0.8;
      view.ox = mx - (mx - view.ox) * f; view.oy = my - (my - view.oy) * f; view.s *= f;
      draw();
    }, { passive: false });
    canvas.addEventListener("dblclick", function () { view = { s: 1, ox: 0, oy: 0 }; draw(); });
    select.addEventListener("change", draw);
    window.addEventListener("resize", draw);
    draw();
  }

  // -- page ---------------------------------------------------------------------------------------
  document.getElementById("title").textContent = R.title;
  document.title = R.title;
  document.getElementById("meta").textContent = R.images + " images · built " + R.created +
    " · exoray " + R.version + " · " + R.sheets.length + " sprite sheets";
  var main = document.getElementById("report"), toc = document.getElementById("toc");
  main.textContent = "";
  R.sections.forEach(function (s) {
    var sec = el("section");
    sec.id = s.id;
    sec.appendChild(el("h2", null, s.title));
    sec.appendChild(rich("p", "intro", s.intro));
    s.blocks.forEach(function (b) {
      var make = render[b.type];
      if (!make) { console.error("exoray report: unknown block type " + b.type); return; }
      sec.appendChild(make(b));
    });
    main.appendChild(sec);
    var a = el("a", null, s.title);
    a.href = "#" + s.id;
    toc.appendChild(a);
  });
  S.rendered = true;
})();
