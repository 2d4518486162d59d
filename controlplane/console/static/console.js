// Draws every chart on the page with uPlot from its JSON script element (no inline scripts:
// the CSP allows only files from this origin). After drawing, each chart's element carries
// data-points (how many points it drew) and window.meterlineCharts holds the uPlot objects,
// so a test (or a curious operator) can read back what was drawn.
(function () {
  "use strict";
  var palette = ["#2457c5", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c"];
  window.meterlineCharts = {};
  function draw(box) {
    var source = document.getElementById(box.getAttribute("data-chart"));
    if (!source) return;
    var chart = JSON.parse(source.textContent);
    if (!chart.times || chart.times.length === 0) { box.setAttribute("data-points", "0"); return; }
    var names = Object.keys(chart.series);
    var data = [chart.times].concat(names.map(function (n) { return chart.series[n]; }));
    var series = [{}].concat(names.map(function (name, i) {
      return {
        label: name,
        stroke: palette[i % palette.length],
        width: 2,
        points: chart.times.length < 50 ? { show: true, size: 8 } : {},
      };
    }));
    var width = Math.max(280, box.clientWidth || 600);
    var plot = new uPlot({
      width: width,
      height: 260,
      series: series,
      scales: {
        x: { time: true, range: function () { return [chart.start, chart.end]; } },
        // From 0 unless a series goes below it (a negative margin).
        y: { range: function (u, min, max) {
          return [min < 0 ? min * 1.1 : 0, max > 0 ? max * 1.1 : 1];
        } },
      },
      // Months: one tick per month start, labelled YYYY-MM (UTC), not uPlot's day ticks.
      axes: [chart.window === "month" ? {
        splits: function () { return chart.times; },
        values: function (u, splits) {
          return splits.map(function (t) {
            var d = new Date(t * 1000);
            return d.getUTCFullYear() + "-" + String(d.getUTCMonth() + 1).padStart(2, "0");
          });
        },
      } : {}, { size: 70 }],
      hooks: {
        draw: [function (u) {
          var points = 0;
          for (var s = 1; s < u.data.length; s++) {
            for (var i = 0; i < u.data[s].length; i++) { if (u.data[s][i] != null) points++; }
          }
          box.setAttribute("data-points", String(points));
        }],
      },
    }, data, box);
    window.meterlineCharts[box.id] = plot;
  }
  document.querySelectorAll("[data-chart]").forEach(draw);
})();
