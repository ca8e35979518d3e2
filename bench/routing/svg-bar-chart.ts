/** One panel of the chart: a metric, its bars (one per policy) and how to read it. */
export interface ChartPanel {
  title: string;
  unit: string;
  /** "lower" or "higher" is better; shown under the title. */
  better: "lower" | "higher";
  bars: { label: string; value: number }[];
}

const COLORS: Record<string, string> = {
  random: "#9e9e9e",
  "round-robin": "#757575",
  "least-loaded": "#8d6e63",
  sglang: "#42a5f5",
  "llm-d": "#7e57c2",
  kv: "#2e7d32",
  "kv-approx": "#81c784",
};

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function format(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  if (value >= 1000) return value.toFixed(0);
  if (value >= 100) return value.toFixed(0);
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/**
 * A plain SVG bar chart, panels side by side (four to a row), one bar per
 * policy, values printed on the bars. No dependencies: the benchmark writes it next to the
 * docs that quote it.
 */
export function barChartSvg(title: string, subtitle: string, panels: readonly ChartPanel[]): string {
  const panelWidth = 300;
  const panelHeight = 260;
  const top = 70;
  const left = 20;
  const barArea = { x: 40, y: 48, height: 170 };
  const perRow = 4;
  const rows = Math.ceil(panels.length / perRow);
  const width = left * 2 + Math.min(panels.length, perRow) * panelWidth;
  const height = top + rows * panelHeight + 40;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${left}" y="28" font-size="18" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${left}" y="50" font-size="12" fill="#555">${escapeXml(subtitle)}</text>`,
  );
  panels.forEach((panel, p) => {
    const x0 = left + (p % perRow) * panelWidth;
    const y0 = top + Math.floor(p / perRow) * panelHeight;
    const max = Math.max(...panel.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0)), 1e-9);
    const slot = (panelWidth - barArea.x - 10) / panel.bars.length;
    const barWidth = Math.min(28, slot * 0.7);
    parts.push(
      `<g transform="translate(${x0},${y0})">`,
      `<text x="${barArea.x}" y="14" font-size="13" font-weight="bold">${escapeXml(panel.title)}</text>`,
      `<text x="${barArea.x}" y="30" font-size="11" fill="#777">${escapeXml(panel.unit)} · ${panel.better} is better</text>`,
      `<line x1="${barArea.x}" y1="${barArea.y + barArea.height}" x2="${panelWidth - 10}" y2="${barArea.y + barArea.height}" stroke="#333"/>`,
    );
    panel.bars.forEach((bar, i) => {
      const value = Number.isFinite(bar.value) ? bar.value : 0;
      const h = (value / max) * barArea.height;
      const x = barArea.x + i * slot + (slot - barWidth) / 2;
      const y = barArea.y + barArea.height - h;
      const color = COLORS[bar.label] ?? "#607d8b";
      parts.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${barWidth.toFixed(1)}" height="${h.toFixed(1)}" fill="${color}"/>`,
        `<text x="${(x + barWidth / 2).toFixed(1)}" y="${(y - 4).toFixed(1)}" font-size="10" text-anchor="middle">${format(bar.value)}</text>`,
        `<text transform="translate(${(x + barWidth / 2).toFixed(1)},${barArea.y + barArea.height + 10}) rotate(40)" font-size="10">${escapeXml(bar.label)}</text>`,
      );
    });
    parts.push("</g>");
  });
  parts.push("</svg>");
  return `${parts.join("\n")}\n`;
}
