// The fires chart on a trigger's page: fires per hour by outcome (uPlot, vendored).
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("fires-chart");
  if (!el || !window.uPlot) return;
  const data = JSON.parse(el.dataset.chart);
  const colours = { completed: "#0d652d", failed: "#a50e0e", skipped: "#4a4a4a", other: "#7a4a00" };
  const names = Object.keys(data.series);
  const opts = {
    width: Math.min(el.clientWidth || 800, 900),
    height: 240,
    series: [{}].concat(names.map((n) => ({ label: n, stroke: colours[n], width: 2, points: { show: true } }))),
    axes: [{}, { label: "fires" }],
    scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
  };
  new uPlot(opts, [data.x].concat(names.map((n) => data.series[n])), el);
});
