// What every console page shares: asking /api, formatting, building the DOM and drawing charts.
//
// Every string the API returns came from a report and may be hostile: the DOM is built with
// createElement, textContent and setAttribute only, links are same-origin paths with the ids
// encoded, and charts (dygraphs, from /vendor) get labels of our own, never a report's text.

/* --- the API -------------------------------------------------------------------------------- */

export class ApiError extends Error {
    constructor(url, status, message) {
        super(status ? `${url}: ${status} ${message}` : `${url}: ${message}`);
        this.status = status;
    }
}

// GET /api/PATH?PARAMS as JSON; an answer that is not 2xx throws its {"message": ...}.
export async function api(path, params) {
    const query = params ? new URLSearchParams(params).toString() : '';
    const url = '/api/' + path + (query ? '?' + query : '');
    let answer;
    try {
        answer = await fetch(url, { headers: { accept: 'application/json' } });
    } catch (e) {
        throw new ApiError(url, 0, 'no answer from kohaku (' + e.message + ')');
    }
    let body = null;
    try {
        body = await answer.json();
    } catch (e) {
        body = null;
    }
    if (!answer.ok) {
        const why = body && typeof body.message === 'string' ? body.message : answer.statusText;
        throw new ApiError(url, answer.status, why);
    }
    if (body === null)
        throw new ApiError(url, answer.status, 'the answer is not JSON');
    return body;
}

// The samples of one stats table of a connection, offset..offset+limit.
export function samples(id, table, offset, limit) {
    return api(`connections/${encodeURIComponent(id)}/samples`, { table, offset, limit });
}

/* --- the DOM -------------------------------------------------------------------------------- */

// el('a', {href: '/x', class: 'c'}, 'text', child...): attributes by setAttribute, children
// as nodes or text. No event handler attributes, and links only to paths of this origin.
export function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false)
            continue;
        if (k.startsWith('on'))
            throw new Error('el: no event handler attributes');
        const value = v === true ? '' : String(v);
        if (k === 'href' && !/^([/?#](?![/\\])|$)/.test(value))
            throw new Error('el: a link to somewhere else than this origin');
        e.setAttribute(k === 'class' ? 'class' : k, value);
    }
    for (const c of children.flat(Infinity)) {
        if (c !== null && c !== undefined && c !== false)
            e.append(c instanceof Node ? c : String(c));
    }
    return e;
}

export const byId = (id) => document.getElementById(id);

export function clear(node) {
    while (node.firstChild)
        node.firstChild.remove();
    return node;
}

export const paths = {
    connection: (id) => '/connection/' + encodeURIComponent(id),
    channel: (id) => '/channel/' + encodeURIComponent(id),
};

// A link to a page of the console, or a dash when there is no id.
export function link(path, id, text) {
    if (id === null || id === undefined || id === '')
        return el('span', { class: 'none' }, '-');
    return el('a', { href: path(id) }, text === undefined ? id : text);
}

// The id after the page's prefix in the location (/connection/ID).
export function pageId(prefix) {
    const raw = location.pathname.slice(prefix.length).replace(/\/+$/, '');
    try {
        return decodeURIComponent(raw);
    } catch (e) {
        return raw;
    }
}

// Errors go to the page's #error box, one line each.
export function showError(err) {
    const box = byId('error');
    box.append(el('div', {}, err instanceof Error ? err.message : String(err)));
    box.hidden = false;
}

const VERDICTS = ['ok', 'warning', 'bad', 'unrated'];

export function verdict(v) {
    const name = VERDICTS.includes(v) ? v : 'unrated';
    return el('span', { class: 'verdict v-' + name }, v ?? 'unrated');
}

// A two-column table of [name, value] pairs (values as nodes or text).
export function facts(pairs) {
    return el('table', { class: 'facts' },
        el('tbody', {}, pairs.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))));
}

/* --- formatting ----------------------------------------------------------------------------- */

const finite = (v) => typeof v === 'number' && Number.isFinite(v);

export function num(v, digits = 2) {
    return finite(v) ? v.toFixed(digits) : '-';
}

export function bitrate(v) {
    if (!finite(v))
        return '-';
    return v >= 1e6 ? (v / 1e6).toFixed(2) + ' Mbit/s' : (v / 1e3).toFixed(0) + ' kbit/s';
}

export function duration(seconds) {
    if (!finite(seconds))
        return '-';
    const s = Math.round(seconds);
    if (s < 60)
        return s + ' s';
    if (s < 3600)
        return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

// RFC 3339 text or milliseconds -> "YYYY-MM-DD HH:MM:SS" (UTC, as kohaku stores it).
export function when(t) {
    if (t === null || t === undefined)
        return '-';
    const d = new Date(typeof t === 'number' ? t : Date.parse(t));
    return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().slice(0, 19).replace('T', ' ');
}

export const ms = (t) => Date.parse(t);

export function bool(v) {
    return v === null || v === undefined ? '-' : v ? 'yes' : 'no';
}

/* --- charts --------------------------------------------------------------------------------- */

const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b',
    '#e377c2', '#7f7f7f', '#bcbd22'];
export const color = (i) => PALETTE[i % PALETTE.length];
export const SPAN_COLORS = { warning: 'rgba(255, 170, 0, 0.22)', bad: 'rgba(220, 30, 30, 0.22)' };

// What the pages drew, for the tests (and for a curious operator's console): one entry per
// chart, {id, title, x, series: [{name, key, values}], spans}.
export const drawn = [];
window.kohakuCharts = drawn;

let trimmed = false;

// Dygraph, or null (and one notice on the page) when /vendor/dygraph.min.js did not load.
export function charting() {
    const D = window.Dygraph;
    if (typeof D !== 'function') {
        if (!byId('no-charts'))
            byId('error').before(el('div', { id: 'no-charts', class: 'notice' },
                'The charting library is missing: /vendor/dygraph.min.js did not load, so no ' +
                'charts are drawn. Install it (apt-get install libjs-dygraphs) or point ' +
                'console_vendor_dir at it.'));
        return null;
    }
    if (!trimmed) {
        // Its legend writes HTML with inline styles (refused by the page's policy): the
        // legend under each chart is ours, in text.
        D.PLUGINS = D.PLUGINS.filter((p) => p !== D.Plugins.Legend);
        trimmed = true;
    }
    return D;
}

export const hasValues = (values) => values.some(finite);

// The x range of a set of time arrays (ms), widened when it is a single instant.
export function range(...times) {
    const all = times.flat().filter(finite);
    if (!all.length)
        return null;
    let lo = Math.min(...all), hi = Math.max(...all);
    if (hi - lo < 2000) {
        lo -= 1000;
        hi += 1000;
    }
    return [lo, hi];
}

// Merges series sampled at different times onto one x column: [{x: [...], values: [...]}]
// -> {x, columns}, null where a series has no sample.
export function merge(parts) {
    const x = [...new Set(parts.flatMap((p) => p.x))].sort((a, b) => a - b);
    const at = new Map(x.map((t, i) => [t, i]));
    const columns = parts.map((p) => {
        const col = new Array(x.length).fill(null);
        p.x.forEach((t, i) => { col[at.get(t)] = finite(p.values[i]) ? p.values[i] : null; });
        return col;
    });
    return { x, columns };
}

const groups = new Map();

// A chart in parent, returning its figure (a notice instead of the plot when the library is
// missing). spec: {id, title, unit, x: [ms], series: [{name, key, values, color, width,
// hidden}], spans: [{from, to, severity}] (shaded), lanes: [{from, to, severity, text}] (the
// issue timeline: one bar per lane), window: [ms, ms], group (charts zoomed together), kmb
// (k/M/B axis labels), valueRange, step, wide, connect (false: a gap stays a gap)}.
export function chart(parent, spec) {
    const D = charting();
    const legend = el('figcaption', { class: 'legend' });
    const plot = el('div', { class: 'plot' });
    const fig = el('figure', { class: spec.wide ? 'chart wide' : 'chart', 'data-chart': spec.id },
        el('div', { class: 'chart-title' }, spec.title + (spec.unit ? ` (${spec.unit})` : '')),
        plot, legend);
    parent.append(fig);
    const entry = { id: spec.id, title: spec.title, x: spec.x, spans: spec.spans || [],
        lanes: spec.lanes || [],
        series: spec.series.map((s) => ({ name: s.name, key: s.key, values: s.values })) };
    drawn.push(entry);
    const colors = spec.series.map((s, i) => s.color || color(i));
    const swatches = () => spec.series.map((s, i) => {
        const sw = el('span', { class: 'swatch' });
        sw.style.backgroundColor = colors[i];
        return s.hidden ? null : el('span', { class: 'item' }, sw, s.name);
    }).filter(Boolean);
    legend.append(...swatches());
    if (!D) {
        plot.classList.add('empty');
        plot.append('(no charting library)');
        return fig;
    }
    if (spec.lanes)
        plot.style.height = (24 + 20 * Math.max(1, spec.lanes.length)) + 'px';
    const rows = spec.x.map((t, i) => [new Date(t), ...spec.series.map((s) =>
        finite(s.values[i]) ? s.values[i] : null)]);
    const labels = ['time', ...spec.series.map((s, i) => 's' + i)];
    const series = {};
    spec.series.forEach((s, i) => { series['s' + i] = { strokeWidth: s.width || 1.5 }; });
    const g = new D(plot, rows, {
        labels, colors, series, labelsUTC: true, labelsKMB: !!spec.kmb,
        dateWindow: spec.window || undefined, valueRange: spec.valueRange || undefined,
        stepPlot: !!spec.step, connectSeparatedPoints: spec.connect !== false,
        visibility: spec.series.map((s) => !s.hidden), drawPoints: spec.x.length < 4,
        pointSize: 2, axisLabelWidth: 60, xAxisHeight: 20, includeZero: !spec.valueRange,
        axes: spec.lanes ? { y: { axisLabelFormatter: () => '' } } : {},
        highlightCallback: (event, x, points) => {
            clear(legend).append(el('span', { class: 'at' }, when(x)), ...points.map((p) =>
                el('span', { class: 'item' }, spec.series[labels.indexOf(p.name) - 1].name +
                    ' ' + (finite(p.yval) ? +p.yval.toPrecision(4) : '-'))));
        },
        unhighlightCallback: () => clear(legend).append(...swatches()),
        underlayCallback: (ctx, area, graph) => underlay(ctx, area, graph, spec),
        zoomCallback: (lo, hi) => {
            for (const other of groups.get(spec.group) || [])
                if (other !== g)
                    other.updateOptions({ dateWindow: [lo, hi] });
        },
    });
    if (spec.group) {
        if (!groups.has(spec.group))
            groups.set(spec.group, []);
        groups.get(spec.group).push(g);
    }
    entry.dygraph = g;
    return fig;
}

// Issue spans shaded behind the lines; lanes drawn as bars with their text (canvas text:
// never HTML).
function underlay(ctx, area, g, spec) {
    const xs = (t) => Math.min(area.x + area.w, Math.max(area.x, g.toDomXCoord(t)));
    for (const s of spec.spans || []) {
        const a = xs(s.from), b = xs(s.to);
        ctx.fillStyle = SPAN_COLORS[s.severity] || SPAN_COLORS.warning;
        ctx.fillRect(a, area.y, Math.max(b - a, 3), area.h);
    }
    const lanes = spec.lanes || [];
    const h = lanes.length ? area.h / lanes.length : 0;
    ctx.font = '11px sans-serif';
    ctx.textBaseline = 'middle';
    lanes.forEach((s, i) => {
        const a = xs(s.from), b = xs(s.to), y = area.y + i * h;
        ctx.fillStyle = s.severity === 'bad' ? 'rgba(220, 30, 30, 0.55)' : 'rgba(255, 170, 0, 0.6)';
        ctx.fillRect(a, y + 2, Math.max(b - a, 3), h - 4);
        ctx.fillStyle = '#222';
        ctx.fillText(s.text, Math.min(a + 4, area.x + area.w - 200), y + h / 2, area.w - 8);
    });
}
