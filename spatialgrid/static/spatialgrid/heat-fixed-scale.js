/*
 * spatialgrid: keep Leaflet.heat colours fixed across zoom levels.
 *
 * Leaflet.heat (with folium's weights patch) divides every redraw by the largest
 * cell sum currently on screen, so colours change with each zoom and pan. The
 * server already normalised the weights (0..1 against one fixed scale), so:
 *   - option `fixedMax` pins the divisor (colour = weight / fixedMax, clipped);
 *   - lockHeatRadius() keeps the kernel radius a fixed number of metres, so the
 *     plugin never merges two server cells into one screen cell.
 * Together a cell looks the same at every zoom. MIT licence, part of spatialgrid.
 */
(function () {
  "use strict";
  if (!window.L || !L.HeatLayer) {
    return;
  }
  var proto = L.HeatLayer.prototype;
  var initCanvas = proto._initCanvas;
  proto._initCanvas = function () {
    initCanvas.call(this);
    var layer = this;
    var heat = this._heat;
    var setMax = heat.max;
    heat.max = function (value) {
      var fixed = layer.options.fixedMax;
      return setMax.call(heat, fixed ? fixed : value);
    };
  };
  L.spatialgrid = L.spatialgrid || {};
  L.spatialgrid.lockHeatRadius = function (map, layer, metres, blurRatio, minPixels) {
    var ratio = blurRatio === undefined ? 0.4 : blurRatio;
    var floor = minPixels === undefined ? 3 : minPixels;
    function update() {
      var lat = map.getCenter().lat;
      var metresPerPixel =
        (40075016.686 * Math.cos((lat * Math.PI) / 180)) / Math.pow(2, map.getZoom() + 8);
      var total = Math.max(floor, metres / metresPerPixel);
      layer.setOptions({ radius: total * (1 - ratio), blur: total * ratio });
    }
    map.on("zoomend", update);
    update();
  };
})();
