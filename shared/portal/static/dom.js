// Small DOM builders: text only (never HTML), tables that say what they hold.


export function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

export function heading(level, text) {
  const h = document.createElement(`h${level}`);
  h.textContent = text;
  return h;
}

// A table of ``rows`` ({cells, data, sort?}) under ``columns``; every column header is a
// button that sorts by it (numbers by value: ``row.sort[index]`` when given), its state in
// aria-sort, so the table is also the chart's keyboard-reachable equivalent.
export function table(caption, columns, rows, numeric = []) {
  const wrap = document.createElement("div");
  wrap.className = "scroll";
  // A region that may scroll sideways is reachable by keyboard, named by its caption.
  wrap.tabIndex = 0;
  wrap.setAttribute("role", "region");
  wrap.setAttribute("aria-label", caption);
  const t = document.createElement("table");
  const c = document.createElement("caption");
  c.className = "hint";
  c.textContent = caption;
  const head = document.createElement("tr");
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = column;
    if (numeric.includes(column)) th.className = "num";
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const tbody = document.createElement("tbody");
  const trs = rows.map((row) => {
    const tr = document.createElement("tr");
    row.cells.forEach((text, index) => tr.append(cell(text, numeric.includes(columns[index]) ? "num" : "")));
    for (const [key, value] of Object.entries(row.data || {})) tr.dataset[key] = value;
    tr.sortKeys = row.cells.map((text, index) => (row.sort && row.sort[index] !== undefined ? row.sort[index] : text));
    return tr;
  });
  tbody.append(...trs);
  [...head.children].forEach((th, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sort";
    button.textContent = th.textContent;
    th.replaceChildren(button);
    th.setAttribute("aria-sort", "none");
    button.addEventListener("click", () => {
      const ascending = th.getAttribute("aria-sort") !== "ascending";
      for (const other of head.children) other.setAttribute("aria-sort", "none");
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      const sorted = [...tbody.children].sort((a, b) => {
        const x = a.sortKeys[index];
        const y = b.sortKeys[index];
        const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      tbody.append(...sorted);
    });
  });
  t.append(c, thead, tbody);
  wrap.append(t);
  return wrap;
}

export function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status === "final" ? "final" : "provisional (the month is still open)";
  return span;
}

export function paragraph(text) {
  const p = document.createElement("p");
  p.textContent = text;
  return p;
}
