/* Phloem metric-tree explorer: hand-written, no framework, no build step.
 *
 * Reads /api/v1/meta (metrics, views, dimensions), /api/v1/query (the data's last day, filter values),
 * /api/v1/periods (the default period and the arrows' periods), /api/v1/tree (values, changes and
 * contributions, and the comparison period it used), /api/v1/tree/series (sparklines), /api/v1/drill
 * (which dimension values drove a change) and /api/v1/whatif; draws the tree as SVG. The page computes no
 * comparison period itself: it names the rule and shows the dates the API answered with (one rule,
 * semantic/metrics/periods.py). The view's state (root, period, grain, comparison, filters, method,
 * expanded nodes) is the URL's query string.
 */
(() => {
  'use strict';

  const API = '/api/v1';
  const SVG = 'http://www.w3.org/2000/svg';
  const GRAINS = ['day', 'week', 'month', 'quarter', 'year'];
  const COMPARES = ['previous', 'yoy', 'custom'];
  const RULES = { previous: 'previous', yoy: 'year_ago', custom: 'custom' }; // the URL's word → the API's
  const METHODS = ['shapley', 'lmdi'];
  const W = 188, H = 132, GX = 16, GY = 48, PAD = 16, SPARK = 12, INDENT = 28, GS = 18;
  const narrow = window.matchMedia('(max-width: 760px)');
  const DEFAULT_OPEN_LEVELS = 2; // without `open` in the URL: the root and its children are expanded
  const OPS = {
    '+': ['+', 'plus'], '-': ['−', 'minus'], '*': ['×', 'times'], '/': ['÷', 'divided by'],
    numerator: ['num', 'numerator'], denominator: ['÷', 'denominator'], cumulative: ['Σ', 'cumulative'],
    offset: ['⟲', 'offset'], f: ['f', 'function of'],
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- state ----------
  let state = null;      // {root, grain, start, end, compare, compareStart, compareEnd, method, where[], open}
  let meta = null;       // /meta
  let metricsByName = {};
  let viewsByName = {};
  let lastDay = null;    // the last day with data (YYYY-MM-DD)
  let tree = null;       // the last /tree answer
  let series = null;     // the last /tree/series answer
  let dataKey = '';      // what `tree` answers
  let seriesKey = '';
  let whatif = null;     // {name, pct, byName: {metric: {value, new_value, change}}}
  let selected = null;   // the metric in the side panel
  let focusKey = null;   // the card to focus after a render
  let loadSeq = 0;
  let loads = 0;
  let stackedNow = false;
  let drillSeq = 0;
  let filterValues = [];

  // ---------------------------------------------------------------- dates ----------
  const parse = (s) => { const [y, m, d] = s.split('-').map(Number); return new Date(Date.UTC(y, m - 1, d)); };
  const iso = (t) => t.toISOString().slice(0, 10);
  const isDate = (s) => typeof s === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(s) && !isNaN(parse(s));
  function addDays(s, n) { const t = parse(s); t.setUTCDate(t.getUTCDate() + n); return iso(t); }
  function addMonths(s, n) {
    const t = parse(s), day = t.getUTCDate();
    const u = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth() + n, 1));
    const last = new Date(Date.UTC(u.getUTCFullYear(), u.getUTCMonth() + 1, 0)).getUTCDate();
    u.setUTCDate(Math.min(day, last));
    return iso(u);
  }
  function bucketStart(s, g) {
    const t = parse(s), y = t.getUTCFullYear(), m = t.getUTCMonth();
    switch (g) {
      case 'day': return s;
      case 'week': return addDays(s, -((t.getUTCDay() + 6) % 7)); // weeks start on Monday
      case 'month': return iso(new Date(Date.UTC(y, m, 1)));
      case 'quarter': return iso(new Date(Date.UTC(y, m - (m % 3), 1)));
      default: return iso(new Date(Date.UTC(y, 0, 1)));
    }
  }
  function bucketAdd(s, g, n) {
    switch (g) {
      case 'day': return addDays(s, n);
      case 'week': return addDays(s, 7 * n);
      case 'month': return addMonths(s, n);
      case 'quarter': return addMonths(s, 3 * n);
      default: return addMonths(s, 12 * n);
    }
  }
  const bucketEnd = (s, g) => addDays(bucketAdd(bucketStart(s, g), g, 1), -1);
  const days = (a, b) => Math.round((parse(b) - parse(a)) / 864e5) + 1;
  const aligned = (s, e, g) => bucketStart(s, g) === s && bucketEnd(e, g) === e;
  function buckets(s, e, g) {
    let n = 0;
    for (let b = s; b <= e && n < 5000; b = bucketAdd(b, g, 1)) n++;
    return n;
  }
  /** The API's parameters for the comparison of `st`: a rule, and dates only for a custom one. */
  function comparisonParams(st) {
    if (st.compare === 'custom' && isDate(st.compareStart) && isDate(st.compareEnd)) {
      return { comparison: 'custom', compare_start: st.compareStart, compare_end: st.compareEnd };
    }
    return { comparison: st.compare === 'custom' ? 'previous' : RULES[st.compare] };
  }
  /** The comparison period as the last tree answer states it (a custom one as asked, before the answer). */
  function shownComparison() {
    if (tree && tree.comparison) return [tree.comparison.start, tree.comparison.end];
    return state.compare === 'custom' ? [state.compareStart || '', state.compareEnd || ''] : ['', ''];
  }
  /** Dates by the API's rule: `/periods` for a period (start/end, or grain/day/last_day). */
  const periodsOf = (q) => api('/periods?' + params(q));
  const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  function periodLabel(s, e, g) {
    const t = parse(s);
    if (s === e) return s;
    if (aligned(s, e, g) && buckets(s, e, g) === 1) {
      if (g === 'month') return `${MONTHS[t.getUTCMonth()]} ${t.getUTCFullYear()}`;
      if (g === 'quarter') return `Q${Math.floor(t.getUTCMonth() / 3) + 1} ${t.getUTCFullYear()}`;
      if (g === 'year') return String(t.getUTCFullYear());
      if (g === 'week') return `week of ${s}`;
    }
    if (aligned(s, e, 'month')) {
      const u = parse(e);
      return `${MONTHS[t.getUTCMonth()]} ${t.getUTCFullYear()} – ${MONTHS[u.getUTCMonth()]} ${u.getUTCFullYear()}`;
    }
    return `${s} – ${e}`;
  }

  // ---------------------------------------------------------------- numbers --------
  const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const numFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const money = (v, digits) => new Intl.NumberFormat('en-US', {
    style: 'currency', currency: 'USD', minimumFractionDigits: digits, maximumFractionDigits: digits }).format(v);
  const ok = (v) => v !== null && v !== undefined && Number.isFinite(Number(v));
  const MINUS = '−';

  function fmt(v, format) {
    if (!ok(v)) return '—';
    v = Number(v);
    const a = Math.abs(v);
    let out;
    if (format === 'percent') out = (a * 100).toFixed(a < 0.1 ? 2 : 1) + '%';
    else if (format === 'currency') out = a >= 1e7 ? money(a / 1e6, 2) + 'M' : money(a, a >= 1000 ? 0 : 2);
    else if (format === 'integer') out = a >= 1e7 ? numFmt.format(a / 1e6) + 'M' : intFmt.format(Math.round(a));
    else out = a >= 1e7 ? numFmt.format(a / 1e6) + 'M' : numFmt.format(a);
    return (v < 0 ? MINUS : '') + out;
  }
  function fmtChange(v, format) {
    if (!ok(v)) return '—';
    v = Number(v);
    const sign = v > 0 ? '+' : v < 0 ? MINUS : '±';
    if (format === 'percent') return sign + (Math.abs(v) * 100).toFixed(1) + ' pp';
    return sign + fmt(Math.abs(v), format);
  }
  function fmtPct(change, base) {
    if (!ok(change) || !ok(base) || Number(base) === 0) return '';
    const p = (Number(change) / Math.abs(Number(base))) * 100;
    const a = Math.abs(p);
    return (p > 0 ? '+' : p < 0 ? MINUS : '±') + (a >= 100 ? a.toFixed(0) : a.toFixed(1)) + '%';
  }
  /** good / bad / flat: a change judged by the metric's `good` direction (costs up is bad). */
  function tone(change, good) {
    if (!ok(change) || Math.abs(Number(change)) < 1e-9) return 'flat';
    const up = Number(change) > 0;
    if (good === 'down') return up ? 'bad' : 'good';
    if (good === 'up' || !good) return up ? 'good' : 'bad';
    return 'flat';
  }

  // ---------------------------------------------------------------- URL ------------
  function readURL() {
    const q = new URLSearchParams(location.search);
    const pick = (k, allowed, dflt) => (allowed.includes(q.get(k)) ? q.get(k) : dflt);
    return {
      root: q.get('root') || 'profit',
      grain: pick('grain', GRAINS, 'month'),
      start: isDate(q.get('start')) ? q.get('start') : null,
      end: isDate(q.get('end')) ? q.get('end') : null,
      compare: q.get('compare') === 'year_ago' ? 'yoy' : pick('compare', COMPARES, 'previous'),
      compareStart: isDate(q.get('compare_start')) ? q.get('compare_start') : null,
      compareEnd: isDate(q.get('compare_end')) ? q.get('compare_end') : null,
      method: pick('method', METHODS, 'shapley'),
      where: q.getAll('where').filter((w) => w.trim()),
      open: q.has('open') ? new Set(q.get('open').split(',').filter(Boolean)) : null,
    };
  }
  function toQuery(st) {
    const q = new URLSearchParams();
    q.set('root', st.root);
    q.set('grain', st.grain);
    q.set('start', st.start);
    q.set('end', st.end);
    q.set('compare', st.compare);
    if (st.compare === 'custom' && isDate(st.compareStart) && isDate(st.compareEnd)) {
      q.set('compare_start', st.compareStart);
      q.set('compare_end', st.compareEnd);
    }
    q.set('method', st.method);
    st.where.forEach((w) => q.append('where', w));
    if (st.open) q.set('open', [...st.open].sort().join(','));
    return '?' + q.toString();
  }
  function commit(push) {
    const qs = toQuery(state);
    if (qs !== location.search) history[push ? 'pushState' : 'replaceState'](null, '', qs);
  }

  // ---------------------------------------------------------------- API ------------
  async function api(path, init) {
    const r = await fetch(API + path, init);
    let body = null;
    try { body = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const e = body && body.error;
      const text = e ? e.message + (e.suggestion ? ` (${e.suggestion})` : '') : `${r.status} ${r.statusText}`;
      throw new Error(text);
    }
    return body;
  }
  const post = (path, json) => api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(json) });
  function params(obj) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(obj)) {
      if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
      else if (v !== null && v !== undefined) q.set(k, v);
    }
    return q.toString();
  }
  function treeParams() {
    return { root: state.root, start: state.start, end: state.end, ...comparisonParams(state), method: state.method, where: state.where };
  }

  // ---------------------------------------------------------------- model helpers --
  /** The views holding the measures `name` is computed from. */
  function leafViews(name, seen = new Set()) {
    const m = metricsByName[name];
    if (!m || seen.has(name)) return [];
    seen.add(name);
    if (!m.children || !m.children.length) return m.measure ? [m.measure.split('.')[0]] : [];
    return [...new Set(m.children.flatMap((c) => leafViews(c.metric, seen)))];
  }
  /** Non-time dimensions a view reaches through its many-to-one joins, nearest first. */
  function reachableDims(view) {
    const out = new Map(), seen = new Set([view]), queue = [view];
    while (queue.length) {
      const v = viewsByName[queue.shift()];
      if (!v) continue;
      for (const d of v.dimensions) if (d.type !== 'time' && !out.has(d.name)) out.set(d.name, d);
      for (const j of v.joins || []) if (!seen.has(j.to)) { seen.add(j.to); queue.push(j.to); }
    }
    return out;
  }
  /** Dimensions every leaf of `name` can be sliced by (what drill and filters offer). */
  function dimsFor(name) {
    const views = leafViews(name);
    if (!views.length) return [];
    const sets = views.map(reachableDims);
    return [...sets[0].values()].filter((d) => sets.every((s) => s.has(d.name)));
  }
  function sqlFilter(dim, value) {
    if (value === null || value === undefined) return `${dim} is null`;
    if (typeof value === 'boolean' || typeof value === 'number') return `${dim} = ${value}`;
    return `${dim} = '${String(value).replace(/'/g, "''")}'`;
  }

  // ---------------------------------------------------------------- loading --------
  function setStatus(text, kind) {
    const s = $('status');
    s.textContent = text || '';
    s.className = 'status' + (kind ? ' ' + kind : '');
  }
  const keyOf = (p) => params(p);

  async function load() {
    const seq = ++loadSeq;
    const tp = treeParams();
    const sp = { root: state.root, grain: state.grain, periods: SPARK, end: state.end, where: state.where };
    const tKey = keyOf(tp), sKey = keyOf(sp);
    if (tKey === dataKey && sKey === seriesKey) { render(); document.body.dataset.loads = String(++loads); return; }
    document.body.classList.add('busy');
    $('tree').setAttribute('aria-busy', 'true');
    setStatus('Loading…');
    const wantSeries = sKey !== seriesKey;
    const [t, s] = await Promise.allSettled([
      tKey === dataKey ? Promise.resolve(tree) : api('/tree?' + params(tp)),
      wantSeries ? api('/tree/series?' + params(sp)) : Promise.resolve(series),
    ]);
    if (seq !== loadSeq) return; // a newer request superseded this one
    document.body.classList.remove('busy');
    $('tree').removeAttribute('aria-busy');
    document.body.dataset.loads = String(++loads); // how many answers were drawn (tests wait on it)
    if (t.status === 'rejected') {
      setStatus('Could not load the tree: ' + t.reason.message, 'error');
      return;
    }
    if (tKey !== dataKey) whatif = null;
    tree = t.value;
    dataKey = tKey;
    if (s.status === 'fulfilled') { series = s.value; seriesKey = sKey; } else { series = null; seriesKey = ''; }
    setStatus(s.status === 'rejected' ? 'Sparklines unavailable: ' + s.reason.message : '');
    syncComparison();
    render();
    if (selected && !$('panel').hidden) showPanel(selected, { drill: true, keepFocus: true });
  }

  /** Apply a change of state: write the URL (a history entry unless `replace`), then reload or redraw. */
  function update(patch, { replace = false } = {}) {
    Object.assign(state, patch);
    commit(!replace);
    syncControls();
    load();
  }

  // ---------------------------------------------------------------- tree layout ----
  function structure() {
    const nodes = {}, kids = {};
    for (const n of tree.nodes) { nodes[n.name] = n; kids[n.name] = []; }
    for (const e of tree.edges) if (kids[e.parent] && nodes[e.child]) kids[e.parent].push(e);
    const open = state.open;
    const visible = [];
    let slot = 0;
    function build(name, level, key, edge, parent, trail) {
      const item = { name, level, key, edge, parent, node: nodes[name], hasKids: kids[name].length > 0, children: [] };
      item.open = item.hasKids && (open ? open.has(name) : level < DEFAULT_OPEN_LEVELS) && !trail.has(name);
      visible.push(item);
      if (item.open) {
        const next = new Set(trail).add(name);
        kids[name].forEach((e, i) => item.children.push(build(e.child, level + 1, key + '/' + i, e, item, next)));
      }
      if (stacked) {
        item.x = PAD + level * INDENT;
      } else if (item.children.length) {
        item.x = (item.children[0].x + item.children[item.children.length - 1].x) / 2;
      } else {
        item.x = PAD + slot * (W + GX);
        slot++;
      }
      item.y = stacked ? item.y : PAD + 12 + level * (H + GY);
      return item;
    }
    // stacked (phone widths): one card per row, children indented under their parent
    const stacked = narrow.matches;
    const rowOf = (item) => { item.y = PAD + 12 + visible.indexOf(item) * (H + GS); };
    const root = build(tree.root, 0, '0', null, null, new Set());
    const depth = Math.max(...visible.map((v) => v.level));
    if (stacked) {
      visible.forEach(rowOf);
      return { root, visible, nodes, kids, stacked, width: PAD * 2 + depth * INDENT + W,
        height: PAD * 2 + 12 + visible.length * (H + GS) - GS };
    }
    return { root, visible, nodes, kids, stacked, width: PAD * 2 + slot * (W + GX) - GX, height: PAD * 2 + 12 + (depth + 1) * H + depth * GY };
  }

  // ---------------------------------------------------------------- drawing --------
  function el(tag, attrs, parent, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  /** Shorten an SVG text (with an ellipsis) until it is at most `width` pixels wide. */
  function fit(text, width) {
    const full = text.textContent;
    if (!text.getComputedTextLength || text.getComputedTextLength() <= width) return text;
    let n = full.length;
    while (n > 1 && text.getComputedTextLength() > width) text.textContent = full.slice(0, --n).trimEnd() + '…';
    return text;
  }

  function render() {
    if (!tree) return;
    const svg = $('tree');
    const active = document.activeElement;
    if (!focusKey && active && active.classList && active.classList.contains('card')) focusKey = active.dataset.key;
    svg.replaceChildren();
    const s = structure();
    stackedNow = s.stacked;
    svg.classList.toggle('stacked', s.stacked);
    svg.setAttribute('width', s.width);
    svg.setAttribute('height', s.height);
    svg.setAttribute('viewBox', `0 0 ${s.width} ${s.height}`);
    const root = s.nodes[tree.root];
    const edges = el('g', { class: 'edges', 'aria-hidden': 'true' }, svg);
    const ops = el('g', { class: 'ops' }, svg);
    const cards = el('g', { class: 'cards' }, svg);
    for (const item of s.visible) {
      if (item.parent) drawEdge(edges, ops, item);
      drawCard(cards, item, root, s);
    }
    renderSummary(root);
    renderWhatifBanner();
    if (focusKey) {
      const card = svg.querySelector(`.card[data-key="${focusKey}"]`);
      if (card) card.focus({ preventScroll: false });
      focusKey = null;
    }
  }

  function drawEdge(g, ops, item) {
    const p = item.parent, e = item.edge;
    let at;
    if (stackedNow) { // an elbow from the parent's left side to the child's
      const px = p.x + INDENT / 2, cy = item.y + 26;
      el('path', { d: `M${px},${p.y + H} V${cy} H${item.x}`, class: 'edge' + (e.sign < 0 ? ' neg' : '') }, g);
      at = [px, cy];
    } else {
      const px = p.x + W / 2, py = p.y + H, cx = item.x + W / 2, cy = item.y, mid = py + GY / 2;
      el('path', { d: `M${px},${py} V${mid} H${cx} V${cy}`, class: 'edge' + (e.sign < 0 ? ' neg' : '') }, g);
      at = [cx, mid];
    }
    const [sym, word] = OPS[e.operator] || [e.operator, e.operator];
    const op = el('g', { class: 'op' + (e.sign < 0 ? ' neg' : ''), transform: `translate(${at[0]},${at[1]})` }, ops);
    const w = Math.max(18, sym.length * 7 + 10);
    el('rect', { x: -w / 2, y: -9, width: w, height: 18, rx: 9 }, op);
    el('text', { x: 0, y: 4.5, 'text-anchor': 'middle', class: sym.length > 1 ? 'word' : null }, op, sym);
    el('title', {}, op, `${p.name} ${word} ${item.name}`);
  }

  function drawCard(g, item, root, s) {
    const n = item.node || { name: item.name, label: item.name };
    const t = tone(n.change, n.good);
    const isRoot = !item.parent;
    const pct = fmtPct(n.change, n.comparison);
    const wi = whatif && whatif.byName[item.name];
    const label = n.label || n.name;
    const card = el('g', {
      class: `card ${t}` + (isRoot ? ' root' : '') + (selected === item.name ? ' selected' : '') + (wi && Math.abs(wi.change) > 1e-9 ? ' changed' : ''),
      transform: `translate(${item.x},${item.y})`, tabindex: 0, role: 'treeitem',
      'aria-level': item.level + 1, 'aria-expanded': item.hasKids ? String(item.open) : null,
      'aria-selected': String(selected === item.name),
      'aria-label': `${label}: ${fmt(n.value, n.format)}, was ${fmt(n.comparison, n.format)}, ` +
        `change ${fmtChange(n.change, n.format)} ${pct}` + (isRoot ? '' : `, contributes ${fmtChange(n.contribution, root.format)} to ${root.label || root.name}`) +
        (wi ? `, what-if ${fmt(wi.new_value, n.format)}` : ''),
      'data-key': item.key, 'data-metric': item.name, 'data-value': ok(n.value) ? n.value : '',
      'data-comparison': ok(n.comparison) ? n.comparison : '', 'data-change': ok(n.change) ? n.change : '',
      'data-contribution': ok(n.contribution) ? n.contribution : '', 'data-whatif': wi ? wi.new_value : null,
    }, g);
    const about = metricsByName[item.name] && metricsByName[item.name].description;
    el('title', {}, card, `${label} = ${n.formula || ''}` + (about ? '\n' + about : '') + (n.reason ? '\n' + n.reason : ''));
    el('rect', { class: 'bg', width: W, height: H, rx: 8 }, card);
    el('rect', { class: 'stripe', width: 5, height: H - 16, x: 0, y: 8, rx: 2 }, card);
    fit(el('text', { class: 'label', x: 14, y: 21 }, card, label), item.hasKids ? W - 48 : W - 22);
    if (item.hasKids) {
      const tg = el('g', { class: 'toggle', transform: `translate(${W - 28},6)`, 'aria-hidden': 'true' }, card);
      el('rect', { width: 22, height: 20, rx: 4 }, tg);
      el('text', { x: 11, y: 14.5, 'text-anchor': 'middle' }, tg, item.open ? '▾' : '▸');
      el('title', {}, tg, item.open ? 'Collapse (Enter)' : 'Expand (Enter)');
    }
    el('text', { class: 'value', x: 14, y: 47 }, card, fmt(n.value, n.format));
    el('text', { class: 'comp', x: 14, y: 65 }, card, `was ${fmt(n.comparison, n.format)}`);
    const ch = el('text', { class: 'change', x: 14, y: 83 }, card);
    if (!ok(n.change) && n.reason) { // e.g. an offset metric over a whole period: the reason is in the panel
      ch.classList.add('why');
      ch.textContent = n.reason.replace(/`/g, '');
      fit(ch, W - 22);
    } else {
      el('tspan', {}, ch, (Number(n.change) > 0 ? '▲ ' : Number(n.change) < 0 ? '▼ ' : '') + fmtChange(n.change, n.format));
      if (pct) el('tspan', { class: 'pct', dx: 6 }, ch, pct);
    }
    drawSpark(card, item.name, n.format);
    const contrib = el('text', { class: 'contrib', x: 14, y: H - 9 }, card);
    if (isRoot) {
      contrib.textContent = `${state.method === 'lmdi' ? 'LMDI' : 'Shapley'}` + (tree.exact ? ' · exact' : '') +
        (ok(tree.residual) && Math.abs(tree.residual) > 0.005 ? ` · residual ${fmtChange(tree.residual, n.format)}` : '');
    } else {
      const share = ok(n.share) ? Number(n.share)
        : ok(n.contribution) && ok(root.change) && Math.abs(root.change) > 1e-9 ? Number(n.contribution) / Number(root.change) : null;
      el('tspan', { class: 'muted' }, contrib, '→ root ');
      el('tspan', { class: 'c ' + tone(n.contribution, root.good) }, contrib, fmtChange(n.contribution, root.format));
      if (share !== null) el('tspan', { class: 'muted', dx: 5 }, contrib, `${Math.round(share * 100)}%`);
    }
    if (wi && ok(wi.change) && Math.abs(Number(wi.change)) > 1e-9) {
      const pill = el('g', { class: 'wi ' + tone(wi.change, n.good), transform: `translate(${W / 2},0)` }, card);
      const text = `if ${fmt(wi.new_value, n.format)} (${fmtChange(wi.change, n.format)})`;
      const w = Math.min(W - 8, text.length * 6.6 + 14);
      el('rect', { x: -w / 2, y: -10, width: w, height: 20, rx: 10 }, pill);
      el('text', { x: 0, y: 4, 'text-anchor': 'middle' }, pill, text);
    }
  }

  function drawSpark(card, name, format) {
    const vals = series && series.series && series.series[name];
    const g = el('g', { class: 'spark', transform: 'translate(14,89)', 'aria-hidden': 'true' }, card);
    const w = W - 28, h = 20;
    if (!vals || !vals.length) { el('line', { x1: 0, x2: w, y1: h / 2, y2: h / 2, class: 'none' }, g); return; }
    const nums = vals.filter(ok).map(Number);
    if (!nums.length) return;
    const min = Math.min(...nums), max = Math.max(...nums);
    const x = (i) => (vals.length === 1 ? w : (i / (vals.length - 1)) * w);
    const y = (v) => (max === min ? h / 2 : h - ((Number(v) - min) / (max - min)) * h);
    let d = '', pen = false;
    vals.forEach((v, i) => {
      if (!ok(v)) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    el('path', { d }, g);
    const periods = series.periods || [];
    const [cs] = shownComparison();
    const ci = isDate(cs) ? periods.indexOf(bucketStart(cs, state.grain)) : -1;
    if (ci >= 0 && ok(vals[ci])) el('circle', { cx: x(ci), cy: y(vals[ci]), r: 2.5, class: 'then' }, g);
    const li = vals.length - 1;
    if (ok(vals[li])) el('circle', { cx: x(li), cy: y(vals[li]), r: 2.5, class: 'now' }, g);
    el('title', {}, g, periods.map((p, i) => `${p}: ${fmt(vals[i], format)}`).join('\n'));
  }

  function renderSummary(root) {
    const [cs, ce] = shownComparison();
    const p = $('summary');
    p.replaceChildren();
    const b = document.createElement('strong');
    b.textContent = `${root.label || root.name} ${fmt(root.value, root.format)}`;
    p.append(b, ` in ${periodLabel(state.start, state.end, state.grain)} vs ${fmt(root.comparison, root.format)} in ${periodLabel(cs, ce, state.grain)}: `);
    const c = document.createElement('span');
    c.className = 'tone ' + tone(root.change, root.good);
    c.textContent = `${fmtChange(root.change, root.format)} ${fmtPct(root.change, root.comparison)}`.trim();
    p.append(c);
    if (state.where.length) p.append(` · filtered to ${state.where.join(' and ')}`);
    if (!ok(root.value) && root.reason) p.append(` (${root.reason.replace(/`/g, '')})`);
  }

  // ---------------------------------------------------------------- interaction ----
  function toggle(name, key) {
    const s = structure();
    const open = state.open ? new Set(state.open) : new Set(s.visible.filter((v) => v.open).map((v) => v.name));
    if (open.has(name)) open.delete(name); else open.add(name);
    focusKey = key;
    update({ open });
  }
  function cardsInOrder() { return [...$('tree').querySelectorAll('.card')]; }
  function onTreeKey(ev) {
    const card = ev.target.closest && ev.target.closest('.card');
    if (!card) return;
    const name = card.dataset.metric, key = card.dataset.key;
    const expandable = card.hasAttribute('aria-expanded'), open = card.getAttribute('aria-expanded') === 'true';
    const cards = cardsInOrder(), i = cards.indexOf(card);
    const focus = (c) => { if (c) { c.focus(); ev.preventDefault(); } };
    switch (ev.key) {
      case 'Enter': case ' ':
        ev.preventDefault();
        if (expandable) toggle(name, key); else showPanel(name, { drill: true });
        break;
      case 'd': case 'D': ev.preventDefault(); showPanel(name, { drill: true }); break;
      case 'w': case 'W': ev.preventDefault(); showPanel(name, { drill: true, whatif: true }); break;
      case 'ArrowRight':
        if (expandable && !open) { ev.preventDefault(); toggle(name, key); } else focus(cards.find((c) => c.dataset.key.startsWith(key + '/')));
        break;
      case 'ArrowLeft':
        if (expandable && open) { ev.preventDefault(); toggle(name, key); } else focus(cards.find((c) => c.dataset.key === key.split('/').slice(0, -1).join('/')));
        break;
      case 'ArrowDown': focus(cards[i + 1]); break;
      case 'ArrowUp': focus(cards[i - 1]); break;
      case 'Home': focus(cards[0]); break;
      case 'End': focus(cards[cards.length - 1]); break;
      default:
    }
  }
  function onTreeClick(ev) {
    const card = ev.target.closest && ev.target.closest('.card');
    if (!card) return;
    if (ev.target.closest('.toggle')) toggle(card.dataset.metric, card.dataset.key);
    else { card.focus(); showPanel(card.dataset.metric, { drill: true }); }
  }

  // ---------------------------------------------------------------- side panel -----
  function showPanel(name, { drill = false, whatif: wantWhatif = false, keepFocus = false } = {}) {
    const n = tree && tree.nodes.find((x) => x.name === name);
    if (!n) return;
    const changedSelection = selected !== name;
    selected = name;
    const panel = $('panel');
    panel.hidden = false;
    document.body.classList.add('with-panel');
    $('panel-title').textContent = n.label || n.name;
    const m = metricsByName[name] || {};
    const facts = $('facts');
    facts.replaceChildren();
    const dl = document.createElement('dl');
    const [cs, ce] = shownComparison();
    const row = (k, v, cls) => {
      const dt = document.createElement('dt'); dt.textContent = k;
      const dd = document.createElement('dd'); dd.textContent = v; if (cls) dd.className = cls;
      dl.append(dt, dd);
    };
    row('Formula', n.formula || m.formula || '');
    if (n.reason) row('Note', n.reason);
    if (m.description) row('About', m.description);
    row(periodLabel(state.start, state.end, state.grain), fmt(n.value, n.format));
    row(periodLabel(cs, ce, state.grain), fmt(n.comparison, n.format));
    row('Change', `${fmtChange(n.change, n.format)} ${fmtPct(n.change, n.comparison)}`, 'tone ' + tone(n.change, n.good));
    if (name !== tree.root) {
      const root = tree.nodes.find((x) => x.name === tree.root);
      row(`Of ${root.label || root.name}'s change`, fmtChange(n.contribution, root.format), 'tone ' + tone(n.contribution, root.good));
    }
    facts.append(dl);
    // what-if: leaves only
    const isLeaf = !tree.edges.some((e) => e.parent === name);
    $('whatif-form').hidden = !isLeaf;
    $('whatif-name').textContent = n.label || n.name;
    if (!isLeaf) {
      const leaves = tree.nodes.filter((x) => !tree.edges.some((e) => e.parent === x.name)).map((x) => x.label || x.name);
      $('whatif-note').textContent = `What-if changes a leaf: pick ${leaves.slice(0, 6).join(', ')}${leaves.length > 6 ? '…' : ''}.`;
    } else if (!whatif || whatif.name !== name) {
      $('whatif-note').textContent = `See how changing ${n.label || n.name} moves everything up to ${tree.root}.`;
    }
    if (changedSelection || !$('drill-dims').querySelector('input')) renderDims(name);
    render();
    if (drill) loadDrill(name);
    if (wantWhatif && isLeaf) $('whatif-pct').focus();
    else if (!keepFocus && changedSelection) { /* keep focus on the card the user is on */ }
  }
  function closePanel() {
    $('panel').hidden = true;
    document.body.classList.remove('with-panel');
    const name = selected;
    selected = null;
    const card = $('tree').querySelector(`.card[data-metric="${name}"]`);
    focusKey = card ? card.dataset.key : null;
    render();
  }
  function renderDims(name) {
    const box = $('drill-dims');
    box.querySelectorAll('label').forEach((l) => l.remove());
    const dims = dimsFor(name);
    if (!dims.length) {
      $('drill-status').textContent = 'This metric has no dimensions to drill by.';
    }
    dims.forEach((d, i) => {
      const label = document.createElement('label');
      const cb = document.createElement('input');
      cb.type = 'checkbox'; cb.value = d.name; cb.checked = i < 4;
      cb.addEventListener('change', () => loadDrill(selected));
      label.append(cb, ' ' + (d.label || d.name));
      box.append(label);
    });
  }
  async function loadDrill(name) {
    const dims = [...$('drill-dims').querySelectorAll('input:checked')].map((x) => x.value);
    const list = $('drill-items');
    const status = $('drill-status');
    if (!dims.length) { list.replaceChildren(); status.textContent = 'Pick at least one dimension.'; return; }
    const seq = ++drillSeq;
    status.textContent = 'Looking for the drivers…';
    list.setAttribute('aria-busy', 'true');
    delete list.dataset.metric;
    let answer;
    try {
      answer = await api('/drill?' + params({ metric: name, start: state.start, end: state.end,
        ...comparisonParams(state), dimensions: dims.join(','), where: state.where }));
    } catch (e) {
      if (seq === drillSeq) { status.textContent = 'Drill failed: ' + e.message; list.replaceChildren(); list.removeAttribute('aria-busy'); }
      return;
    }
    if (seq !== drillSeq) return;
    list.removeAttribute('aria-busy');
    list.dataset.metric = name;
    const n = tree.nodes.find((x) => x.name === name) || {};
    const items = answer.items || [];
    const causes = items.filter((i) => i.root_cause).length;
    status.textContent = !items.length ? 'No dimension value explains this change.'
      : causes ? `${causes} root cause${causes > 1 ? 's' : ''} first, then the other ${items.length - causes} values by surprise.`
        : `${items.length} dimension values, the most surprising first.`;
    const maxAbs = Math.max(1e-9, ...items.map((i) => Math.abs(Number(i.contribution) || 0)));
    list.replaceChildren(...items.slice(0, 40).map((it) => drillItem(it, n, maxAbs)));
  }
  function drillItem(it, n, maxAbs) {
    const li = document.createElement('li');
    li.className = 'item';
    li.dataset.dimension = it.dimension;
    li.dataset.value = it.value === null ? '' : String(it.value);
    li.dataset.contribution = it.contribution;
    const head = document.createElement('div');
    head.className = 'item-head';
    const dim = document.createElement('span'); dim.className = 'dim'; dim.textContent = it.dimension;
    const val = document.createElement('strong'); val.textContent = it.value === null ? '(none)' : String(it.value);
    head.append(dim, ' ', val);
    if (it.root_cause) {
      li.classList.add('cause');
      const tag = document.createElement('span'); tag.className = 'tag'; tag.textContent = 'root cause';
      head.append(' ', tag);
    }
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'filter-to';
    btn.textContent = 'Filter to this';
    const where = sqlFilter(it.dimension, it.value);
    btn.dataset.where = where;
    btn.setAttribute('aria-label', `Filter the tree to ${where}`);
    btn.disabled = state.where.includes(where);
    btn.addEventListener('click', () => addFilter(where));
    head.append(btn);
    const nums = document.createElement('div');
    nums.className = 'item-nums';
    const c = document.createElement('span');
    c.className = 'tone ' + tone(it.contribution, n.good);
    c.textContent = fmtChange(it.contribution, n.format);
    nums.append(`${fmt(it.value0, n.format)} → ${fmt(it.value1, n.format)} `, c);
    if (ok(it.explanatory_power)) nums.append(` · explains ${Math.round(Number(it.explanatory_power) * 100)}%`);
    if (ok(it.surprise)) nums.append(` · surprise ${Number(it.surprise).toFixed(2)}`);
    const bar = document.createElement('div');
    bar.className = 'bar ' + tone(it.contribution, n.good);
    const fill = document.createElement('span');
    fill.style.width = `${Math.round((Math.abs(Number(it.contribution) || 0) / maxAbs) * 100)}%`;
    bar.append(fill);
    li.append(head, nums, bar);
    return li;
  }

  // ---------------------------------------------------------------- what-if --------
  async function applyWhatif(ev) {
    ev.preventDefault();
    const name = selected, pct = Number($('whatif-pct').value);
    if (!name || !Number.isFinite(pct)) return;
    $('whatif-note').textContent = 'Computing…';
    try {
      const answer = await post('/whatif', { root: state.root, start: state.start, end: state.end, where: state.where, changes: { [name]: pct } });
      const byName = {};
      for (const x of answer.nodes || []) byName[x.name] = x;
      whatif = { name, pct, byName };
      const r = byName[state.root];
      const root = tree.nodes.find((x) => x.name === tree.root);
      $('whatif-note').textContent = r ? `${root.label || root.name} would be ${fmt(r.new_value, root.format)} (${fmtChange(r.change, root.format)}).` : '';
    } catch (e) {
      $('whatif-note').textContent = 'What-if failed: ' + e.message;
      return;
    }
    render();
  }
  function resetWhatif() {
    whatif = null;
    $('whatif-note').textContent = '';
    render();
  }
  function renderWhatifBanner() {
    const b = $('whatif-banner');
    b.replaceChildren();
    if (!whatif) { b.hidden = true; return; }
    const n = tree.nodes.find((x) => x.name === whatif.name) || { name: whatif.name };
    const r = whatif.byName[tree.root];
    const root = tree.nodes.find((x) => x.name === tree.root);
    b.hidden = false;
    b.append(`What-if: ${n.label || n.name} ${whatif.pct > 0 ? '+' : whatif.pct < 0 ? MINUS : ''}${Math.abs(whatif.pct)}%` +
      (r ? ` → ${root.label || root.name} ${fmt(r.new_value, root.format)} (${fmtChange(r.change, root.format)})` : '') + ' ');
    const x = document.createElement('button');
    x.type = 'button'; x.textContent = 'Reset'; x.addEventListener('click', resetWhatif);
    b.append(x);
  }

  // ---------------------------------------------------------------- filters --------
  function addFilter(where) {
    if (state.where.includes(where)) return;
    update({ where: [...state.where, where] });
  }
  function removeFilter(where) { update({ where: state.where.filter((w) => w !== where) }); }
  function renderChips() {
    const ul = $('chips');
    ul.replaceChildren(...state.where.map((w) => {
      const li = document.createElement('li');
      li.className = 'chip';
      li.dataset.where = w;
      const x = document.createElement('button');
      x.type = 'button'; x.textContent = '✕'; x.setAttribute('aria-label', `Remove filter ${w}`);
      x.addEventListener('click', () => removeFilter(w));
      li.append(w + ' ', x);
      return li;
    }));
  }
  function populateFilterDims() {
    const sel = $('fdim');
    const keep = sel.value;
    sel.replaceChildren(new Option('dimension…', ''));
    for (const d of dimsFor(state.root)) sel.append(new Option(d.label || d.name, d.name));
    sel.value = [...sel.options].some((o) => o.value === keep) ? keep : '';
    onFilterDim();
  }
  async function onFilterDim() {
    const dim = $('fdim').value, vsel = $('fval');
    vsel.replaceChildren(new Option('value…', ''));
    vsel.disabled = true; $('fadd').disabled = true;
    filterValues = [];
    if (!dim) return;
    try {
      const a = await post('/query', { metrics: [state.root], dimensions: [dim], order_by: ['-' + state.root], limit: 200 });
      if ($('fdim').value !== dim) return;
      const i = a.columns.findIndex((c) => c.name === dim);
      filterValues = a.rows.map((r) => r[i]);
      filterValues.forEach((v, k) => vsel.append(new Option(v === null ? '(none)' : String(v), String(k))));
      vsel.disabled = false;
    } catch (e) {
      setStatus('Could not list values: ' + e.message, 'error');
    }
  }

  // ---------------------------------------------------------------- controls -------
  function syncControls() {
    $('root').value = state.root;
    $('grain').value = state.grain;
    $('start').value = state.start;
    $('end').value = state.end;
    $('compare').value = state.compare;
    $('method').value = state.method;
    $('custom').hidden = state.compare !== 'custom';
    syncComparison();
    renderChips();
    document.title = `${state.root} · ${periodLabel(state.start, state.end, state.grain)} · Phloem`;
  }
  /** The comparison period's inputs show the dates the API compared with. */
  function syncComparison() {
    const [cs, ce] = shownComparison();
    $('compare_start').value = cs;
    $('compare_end').value = ce;
  }
  /** Move to the period `/periods` names in `pick` (e.g. `earlier`); an error shows in the status line. */
  async function goTo(q, pick, patch = {}) {
    let answer;
    try { answer = await periodsOf(q); } catch (e) { setStatus('Could not change the period: ' + e.message, 'error'); return; }
    update({ ...patch, start: answer[pick].start, end: answer[pick].end });
  }
  function bindControls() {
    $('controls').addEventListener('submit', (e) => e.preventDefault());
    $('root').addEventListener('change', (e) => { update({ root: e.target.value, open: null }); populateFilterDims(); });
    // a grain snaps the period to its bucket holding the period's end, or the last full one before the data ends
    $('grain').addEventListener('change', (e) => {
      const g = e.target.value;
      goTo({ grain: g, day: state.end, last_day: lastDay }, 'period', { grain: g });
    });
    const dates = () => {
      let s = $('start').value, e = $('end').value;
      if (!isDate(s) || !isDate(e)) return;
      if (s > e) [s, e] = [e, s];
      update({ start: s, end: e });
    };
    $('start').addEventListener('change', dates);
    $('end').addEventListener('change', dates);
    $('prev').addEventListener('click', () => goTo({ start: state.start, end: state.end }, 'earlier'));
    $('next').addEventListener('click', () => goTo({ start: state.start, end: state.end }, 'later'));
    $('compare').addEventListener('change', (e) => {
      const [cs, ce] = shownComparison(); // a custom comparison starts from the dates just shown
      update({ compare: e.target.value, compareStart: cs, compareEnd: ce });
    });
    const custom = () => {
      let s = $('compare_start').value, e = $('compare_end').value;
      if (!isDate(s) || !isDate(e)) return;
      if (s > e) [s, e] = [e, s];
      update({ compare: 'custom', compareStart: s, compareEnd: e });
    };
    $('compare_start').addEventListener('change', custom);
    $('compare_end').addEventListener('change', custom);
    $('method').addEventListener('change', (e) => update({ method: e.target.value }));
    $('fdim').addEventListener('change', onFilterDim);
    $('fval').addEventListener('change', () => { $('fadd').disabled = $('fval').value === ''; });
    $('fadd').addEventListener('click', () => {
      const k = $('fval').value;
      if (k === '') return;
      addFilter(sqlFilter($('fdim').value, filterValues[Number(k)]));
    });
    const svg = $('tree');
    svg.addEventListener('keydown', onTreeKey);
    svg.addEventListener('click', onTreeClick);
    $('panel-close').addEventListener('click', closePanel);
    $('whatif-form').addEventListener('submit', applyWhatif);
    $('whatif-reset').addEventListener('click', resetWhatif);
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('panel').hidden) closePanel(); });
    narrow.addEventListener('change', render);
    window.addEventListener('popstate', () => {
      const next = readURL();
      const rootChanged = next.root !== state.root;
      state = Object.assign(next, { start: next.start || state.start, end: next.end || state.end });
      syncControls();
      if (rootChanged) populateFilterDims();
      load();
    });
  }

  async function init() {
    bindControls();
    state = readURL();
    setStatus('Loading the model…');
    try {
      meta = await api('/meta');
    } catch (e) {
      setStatus('Could not load the model: ' + e.message, 'error');
      return;
    }
    metricsByName = Object.fromEntries(meta.metrics.map((m) => [m.name, m]));
    viewsByName = Object.fromEntries(meta.views.map((v) => [v.name, v]));
    $('project').textContent = meta.project || '';
    if (!metricsByName[state.root]) state.root = metricsByName.profit ? 'profit' : (meta.tree.roots[0] || meta.metrics[0].name);
    const sel = $('root');
    const trees = meta.metrics.filter((m) => m.children && m.children.length);
    const group = (label, list) => {
      const g = document.createElement('optgroup'); g.label = label;
      list.forEach((m) => g.append(new Option(m.label || m.name, m.name)));
      sel.append(g);
    };
    group('Trees', trees);
    group('Measures', meta.metrics.filter((m) => !m.children || !m.children.length));
    try {
      const a = await post('/query', { metrics: [state.root], dimensions: ['metric_time__day'], order_by: ['-metric_time__day'], limit: 1 });
      lastDay = a.rows.length ? String(a.rows[0][0]).slice(0, 10) : null;
    } catch (e) {
      lastDay = null;
    }
    if (!state.start || !state.end) {
      const day = lastDay || iso(new Date()); // the last full bucket of the grain that holds data
      try {
        const p = (await periodsOf({ grain: state.grain, day, last_day: day })).period;
        [state.start, state.end] = [p.start, p.end];
      } catch (e) {
        setStatus('Could not pick a period: ' + e.message, 'error');
        return;
      }
    } else if (state.start > state.end) {
      [state.start, state.end] = [state.end, state.start];
    }
    commit(false);
    syncControls();
    populateFilterDims();
    await load();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
