/* heatmetro map page: turns the page's plain-HTML panels into Leaflet controls and
   wires the colour-scheme switch. No dependencies besides Leaflet. */
var heatmetro = (function () {
  "use strict";

  function panelControl(map, id, position) {
    var node = document.getElementById(id);
    if (!node) { return null; }
    var Control = L.Control.extend({
      onAdd: function () {
        // Clicks and scrolls on a panel must not pan or zoom the map underneath.
        L.DomEvent.disableClickPropagation(node);
        L.DomEvent.disableScrollPropagation(node);
        return node;
      }
    });
    return new Control({ position: position }).addTo(map);
  }

  function titleLayerControl(title) {
    // Leaflet's layer control has no heading; the radio list alone reads as a puzzle.
    var list = document.querySelector(".leaflet-control-layers-list");
    if (!list) { return; }
    var heading = document.createElement("p");
    heading.className = "hm-title";
    heading.textContent = title;
    list.insertBefore(heading, list.firstChild);
  }

  function setScheme(scheme) {
    // On <html> so that both the heat pane and the legend pick it up.
    document.documentElement.setAttribute("data-scheme", scheme);
  }

  function useRetinaTiles(map, layers) {
    // On a high-DPI screen, draw each heat tile from the next zoom's tiles at half size
    // (Leaflet's detectRetina, minus its lowering of maxZoom): crisp lines, no extra
    // tiles to build. The pyramid's last public zoom stays the last one asked for.
    if ((window.devicePixelRatio || 1) < 1.5) { return; }
    layers.forEach(function (layer) {
      // A PMTiles page opened from a file has an empty L.layerGroup instead: no tiles.
      if (!(layer instanceof L.GridLayer) || layer.options.zoomOffset) { return; }
      var shown = map.hasLayer(layer);
      if (shown) { map.removeLayer(layer); }
      layer.options.tileSize = layer.options.tileSize / 2;
      layer.options.zoomOffset = 1;
      layer.options.maxNativeZoom = layer.options.maxNativeZoom - 1;
      layer.options.minNativeZoom = Math.max(layer.options.minZoom - 1, 0);
      if (!(layer instanceof L.TileLayer)) { offsetTileZoom(layer); }
      if (shown) { map.addLayer(layer); }
    });
  }

  function offsetTileZoom(layer) {
    // zoomOffset is read by TileLayer's URLs only; a GridLayer (pmtiles.js's) draws
    // tile z/x/y itself. A half-size tile z/x/y covers the next zoom's tile of the same
    // x and y, so ask for that one. Leaflet's own coords (its tile keys) stay as they are.
    var createTile = layer.createTile;
    layer.createTile = function (coords, done) {
      var next = L.point(coords.x, coords.y);
      next.z = coords.z + layer.options.zoomOffset;
      return createTile.call(this, next, done);
    };
  }

  function probeRanges(url) {
    // PMTiles archives are read with HTTP range requests. A host without them (or a page
    // opened from a file) leaves a blank map under a normal legend: say so instead.
    function fail() {
      var notice = document.getElementById("hm-tiles-failed");
      if (notice) { notice.hidden = false; }
    }
    try {
      fetch(new URL(url, document.baseURI).href, { headers: { Range: "bytes=0-1" } })
        .then(function (response) {
          heatmetro.ranges = response.status === 206;  // for tests and the console
          if (heatmetro.ranges) {
            response.arrayBuffer();  // its two bytes: the request ends
          } else {
            if (response.body) { response.body.cancel(); }  // not the whole archive
            fail();
          }
        }, fail);
    } catch (err) {
      fail();
    }
  }

  function collapseLayersOnPhones(map) {
    // On a phone the open list of layers covers half the map (and the title): a button
    // there instead, opened by a tap and closed by the next tap on the map.
    if (!window.matchMedia || !window.matchMedia("(max-width: 600px)").matches) { return; }
    var box = document.querySelector(".leaflet-control-layers");
    var toggle = box && box.querySelector(".leaflet-control-layers-toggle");
    if (!toggle) { return; }
    var open = "leaflet-control-layers-expanded";
    box.classList.remove(open);
    toggle.setAttribute("role", "button");
    toggle.setAttribute("aria-label", "Layers");
    L.DomEvent.on(toggle, "click", function (event) {
      L.DomEvent.preventDefault(event);
      box.classList.add(open);  // (Leaflet's own focus handler may have opened it too)
    });
    map.on("click", function () { box.classList.remove(open); });
  }

  function linkedView(map) {
    // The view a "#zoom/lat/lng" link asks for (zoom within the map's), or null.
    var m = /^#(\d{1,2})\/(-?\d+(?:\.\d+)?)\/(-?\d+(?:\.\d+)?)$/.exec(window.location.hash);
    if (!m) { return null; }
    var zoom = Math.max(map.getMinZoom(), Math.min(map.getMaxZoom(), parseInt(m[1], 10)));
    var lat = parseFloat(m[2]), lng = parseFloat(m[3]);
    if (Math.abs(lat) > 90 || Math.abs(lng) > 180) { return null; }
    return { center: [lat, lng], zoom: zoom };
  }

  function openView(map, bounds, options) {
    // The map's first view: a shared link's, else the heat's. Chosen before any view is
    // set, so that no layer fetches tiles for a view the visitor never sees.
    var linked = linkedView(map);
    if (linked) {
      map.setView(linked.center, linked.zoom);
    } else {
      map.fitBounds(bounds, options);
    }
  }

  function keepViewInUrl(map) {
    // "#zoom/lat/lng", as on OpenStreetMap's own site: a view can be shared and survives
    // a reload. Read at start (openView, or here for a map without heat to fit),
    // written on each move.
    var linked = linkedView(map);
    if (linked) { map.setView(linked.center, linked.zoom); }  // a no-op after openView
    var write = function () {
      var c = map.getCenter(), z = map.getZoom();
      var digits = Math.max(0, Math.ceil(Math.log(Math.pow(2, z)) / Math.LN10));  // ~1 px
      var hash = "#" + z + "/" + c.lat.toFixed(digits) + "/" + c.lng.toFixed(digits);
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", hash);
      }
    };
    map.on("moveend", write);
    if (linked) { write(); }  // a zoom out of range reads as the one shown
  }

  // The monthly page is built once a month, the weekly map every week: the weekly job's
  // weekly/weekly.js says which days it now shows and where it has heat, so the page's
  // weekly layer is named by those days and asks for tiles only there.
  function freshWeekly(weekly) {
    var now = window.heatmetroWeekly;
    if (!now) { return; }  // no weekly.js (an older weekly build): the page as built
    var label = "7 days to " + now.last;
    var link = document.getElementById("hm-weekly-link");
    if (link) { link.textContent = label; }
    var layer = weekly.layer, control = weekly.control;
    if (!control) { return; }
    if (layer) { control.removeLayer(layer); }
    // A week without heat (or in another tile format than the page was built for) is
    // no choice: its tiles would all be 404s. Its page, linked above, says why.
    if (!layer || !now.bounds || now.format !== weekly.format) { return; }
    layer.options.bounds = L.latLngBounds(now.bounds);
    control.addBaseLayer(layer, label);
  }

  function init(map, options) {
    if (!map) { return; }
    options = options || {};
    // A screen reader's landmark: the map is the page's main content.
    var box = map.getContainer();
    box.setAttribute("role", "main");
    box.setAttribute("aria-label", document.title || "Heatmap");
    if (options.weekly) { freshWeekly(options.weekly); }
    if (options.retina) { useRetinaTiles(map, options.heat || []); }
    if (options.probe) { probeRanges(options.probe); }
    keepViewInUrl(map);
    panelControl(map, "hm-info", "topleft");
    L.control.zoom({ position: "topleft" }).addTo(map);
    titleLayerControl("Activity");
    collapseLayersOnPhones(map);
    panelControl(map, "hm-scheme", "topright");
    panelControl(map, "hm-legend", "bottomleft");
    var form = document.getElementById("hm-scheme");
    if (form) {
      form.addEventListener("change", function (event) { setScheme(event.target.value); });
      setScheme(form.elements.scheme.value || "hot");
    }
    // Exposed for tests and for people poking around in the console.
    heatmetro.map = map;
  }

  return { init: init, openView: openView, setScheme: setScheme, map: null, ranges: null };
})();
