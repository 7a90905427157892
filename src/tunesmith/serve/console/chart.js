// Loss curves as inline SVG, drawn from the job's metrics events as they arrive: a line and a dot
// per logged step for the training loss, the same for the validation loss. No chart library.

const SVG = "http://www.w3.org/2000/svg";
const PAD = {left: 56, right: 16, top: 26, bottom: 38};

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(low, high, count) {
  if (high === low) return [low];
  const step = (high - low) / (count - 1);
  return Array.from({length: count}, (_, i) => low + i * step);
}

function label(value) {
  return Math.abs(value) >= 100 ? value.toFixed(0) : Number(value.toPrecision(3)).toString();
}

// `points`: [{step, train_loss, valid_loss}], any order. Drawn at the container's own width, so
// its text stays the page's size from 375 px to a wide screen (and again when the width changes).
export function drawLoss(container, points) {
  container.lossPoints = points;
  if (!container.watchingWidth) {
    container.watchingWidth = true;
    let width = container.clientWidth;
    new ResizeObserver(() => {
      if (container.clientWidth !== width) {
        width = container.clientWidth;
        drawLoss(container, container.lossPoints);
      }
    }).observe(container);
  }
  const WIDTH = Math.max(container.clientWidth || 640, 280);
  const HEIGHT = Math.round(Math.min(Math.max(WIDTH * 0.4, 200), 320));
  const series = [
    ["train", points.filter((p) => typeof p.train_loss === "number").map((p) => [p.step, p.train_loss])],
    ["valid", points.filter((p) => typeof p.valid_loss === "number").map((p) => [p.step, p.valid_loss])],
  ].map(([name, pairs]) => [name, pairs.sort((a, b) => a[0] - b[0])]);
  const all = series.flatMap(([, pairs]) => pairs);
  container.replaceChildren();
  if (!all.length) {
    const empty = document.createElement("p");
    empty.className = "note";
    empty.textContent = "No loss yet: a point appears for each logged step.";
    container.appendChild(empty);
    return;
  }
  let [xLow, xHigh] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [yLow, yHigh] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (xHigh === xLow) [xLow, xHigh] = [xLow - 1, xHigh + 1];
  const margin = yHigh === yLow ? Math.max(Math.abs(yLow) * 0.1, 0.5) : (yHigh - yLow) * 0.08;
  [yLow, yHigh] = [yLow - margin, yHigh + margin];
  const x = (step) => PAD.left + (step - xLow) / (xHigh - xLow) * (WIDTH - PAD.left - PAD.right);
  const y = (loss) => HEIGHT - PAD.bottom - (loss - yLow) / (yHigh - yLow) * (HEIGHT - PAD.top - PAD.bottom);

  const chart = svg("svg", {viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, class: "loss-svg",
                             focusable: "false"});
  chart.appendChild(svg("title", {}, `loss over ${all.length} points`));
  for (const value of ticks(yLow, yHigh, 5)) {
    chart.appendChild(svg("line", {x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value), class: "grid"}));
    chart.appendChild(svg("text", {x: PAD.left - 6, y: y(value) + 4, class: "tick y"}, label(value)));
  }
  const steps = [...new Set(ticks(xLow, xHigh, 6).map(Math.round))];
  for (const step of steps) {
    chart.appendChild(svg("text", {x: x(step), y: HEIGHT - PAD.bottom + 16, class: "tick x"}, String(step)));
  }
  chart.appendChild(svg("line", {x1: PAD.left, x2: WIDTH - PAD.right, y1: HEIGHT - PAD.bottom, y2: HEIGHT - PAD.bottom,
                                 class: "axis"}));
  chart.appendChild(svg("line", {x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: HEIGHT - PAD.bottom, class: "axis"}));
  chart.appendChild(svg("text", {x: (WIDTH + PAD.left) / 2, y: HEIGHT - 4, class: "axis-label"}, "step"));
  chart.appendChild(svg("text", {x: 4, y: 14, class: "axis-label"}, "loss"));
  for (const [name, pairs] of series) {
    if (!pairs.length) continue;
    chart.appendChild(svg("polyline", {points: pairs.map(([s, l]) => `${x(s)},${y(l)}`).join(" "), class: `line-${name}`}));
    for (const [step, loss] of pairs) {
      const dot = svg("circle", {cx: x(step), cy: y(loss), r: 3.5, class: `point-${name}`,
                                 "data-step": step, "data-loss": loss});
      dot.appendChild(svg("title", {}, `step ${step}: ${name === "train" ? "training" : "validation"} loss ${label(loss)}`));
      chart.appendChild(dot);
    }
  }
  container.appendChild(chart);
}
