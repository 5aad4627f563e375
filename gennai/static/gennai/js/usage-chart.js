/* Usage dashboard chart (console 利用状況).
 *
 * Reads the data that the server rendered into the canvas's data-chart attribute (no inline script, so the strict
 * Content-Security-Policy holds) and draws it with the vendored Chart.js. Runs on page load and
 * again whenever htmx loads new results (the filter form), destroying the previous chart.
 */
(function () {
  "use strict";

  var COLORS = ["#0017c1", "#e25100", "#259d63", "#ca00c1", "#7f5c00", "#00a3bf", "#ec0000", "#4d4d4d", "#999999"];

  function draw() {
    var canvas = document.querySelector("canvas[data-chart]");
    if (!canvas || typeof window.Chart === "undefined") {
      return;
    }
    var data = JSON.parse(canvas.getAttribute("data-chart"));
    data.datasets.forEach(function (dataset, i) {
      var color = COLORS[i % COLORS.length];
      dataset.backgroundColor = color;
      dataset.borderColor = color;
    });
    var previous = window.Chart.getChart(canvas);
    if (previous) {
      previous.destroy();
    }
    var stacked = data.datasets.length > 1;
    new window.Chart(canvas, {
      type: "bar",
      data: data,
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: stacked }, y: { stacked: stacked, beginAtZero: true } },
        plugins: { legend: { display: stacked } },
      },
    });
    canvas.setAttribute("data-chart-drawn", String(data.datasets.length));
  }

  function start() {
    draw();
    // htmx:load fires on the swapped-in content (in the document), also after an outerHTML swap,
    // where htmx:afterSwap goes to the detached old element and never reaches <body>.
    document.body.addEventListener("htmx:load", function (event) {
      if (event.target && event.target.querySelector && event.target.querySelector("canvas[data-chart]")) {
        draw();
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
