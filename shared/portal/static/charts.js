// Charts: one colour per series key across every chart, AA contrast, a table beside each.
//
// Colours are picked by the series' key (a meter id, a subscription id, a provider), not by
// its place in a chart, so a meter keeps its colour from chart to chart. Every colour has at
// least 3:1 contrast against the page's background (WCAG 2.1 AA for graphics): the light
// palette on white, the dark one on the dark theme's background.

import { state } from "./state.js";

const LIGHT = [
  "#1f5fbf", "#b3261e", "#1b7f5a", "#8a4fbf", "#b25b00", "#007c8c",
  "#a1347a", "#5c6f00", "#4f5d75", "#9c4221", "#2e7d32", "#6a1b9a",
];
const DARK = [
  "#79a8ff", "#ff8a80", "#5fd3a0", "#c9a0ff", "#ffb74d", "#4dd0e1",
  "#f48fb1", "#c5d86d", "#a9b8d4", "#ffab91", "#a5d6a7", "#ce93d8",
];

export function dark() {
  return window.matchMedia?.("(prefers-color-scheme: dark)").matches || false;
}

export function colourFor(key) {
  const palette = dark() ? DARK : LIGHT;
  let hash = 0;
  for (const char of String(key).toLowerCase()) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
  return palette[hash % palette.length];
}

export function destroyCharts() {
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
}

// A stacked bar chart (Chart.js, when the library is present): ``datasets`` are
// {label, key, data}; the caller puts the same figures in a table beside it.
// ``stacked: false`` draws them side by side (two measures, not parts of one whole).
export function stackedBars(canvas, labels, datasets, { xTitle, yTitle, horizontal = false, stacked = true } = {}) {
  if (!window.Chart) return null;
  window.Chart.getChart(canvas)?.destroy(); // a canvas holds one chart
  const ink = dark() ? "#e6edf3" : "#1b1f24";
  const grid = dark() ? "#30363d" : "#d0d7de";
  const chart = new window.Chart(canvas, {
    type: "bar",
    data: {
      labels,
      datasets: datasets.map((d) => ({
        label: d.label, data: d.data, backgroundColor: colourFor(d.key), stack: stacked ? "s" : d.key,
      })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      indexAxis: horizontal ? "y" : "x",
      scales: {
        x: { stacked, ticks: { color: ink }, grid: { color: grid },
          title: { display: Boolean(xTitle), text: xTitle, color: ink } },
        y: { stacked, beginAtZero: true, ticks: { color: ink }, grid: { color: grid },
          title: { display: Boolean(yTitle), text: yTitle, color: ink } },
      },
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12, color: ink } } },
    },
  });
  state.charts.push(chart);
  return chart;
}
