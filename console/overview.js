// The overview: reports per second, and per Sora node the connections rated in each bucket
// and the share of them with issues (/api/overview?last=...).
import { api, byId, chart, color, el, merge, num, range, showError, when } from './common.js';

const PRESETS = ['1h', '6h', '24h', '7d'];
const wanted = new URLSearchParams(location.search).get('last');
const last = PRESETS.includes(wanted) ? wanted : '1h';

for (const p of PRESETS)
    byId('presets').append(el('a', { href: '?last=' + p, class: p === last ? 'preset on'
        : 'preset' }, 'last ' + p), ' ');

// The API leaves out empty buckets: every bucket of the range, 0 where nothing was counted.
function filled(o, x, values) {
    const step = o.bucket_seconds * 1000;
    const at = new Map(x.map((t, i) => [t, values[i]]));
    const grid = [];
    for (let t = Math.floor(Date.parse(o.from) / step) * step; t < Date.parse(o.to); t += step)
        grid.push(t);
    return { x: grid, values: grid.map((t) => at.get(t) ?? 0) };
}

const share = (part, whole) => part.map((v, i) => (whole[i] ? (100 * v) / whole[i] : null));
const sum = (a) => a.reduce((x, y) => x + (y || 0), 0);

async function main() {
    let o;
    try {
        o = await api('overview', { last });
    } catch (e) {
        showError(e);
        document.body.dataset.ready = 'error';
        return;
    }
    byId('range').textContent = `${when(o.from)} .. ${when(o.to)} UTC, in buckets of ` +
        `${o.bucket_seconds} s`;
    const win = range([Date.parse(o.from), Date.parse(o.to)]);
    const charts = byId('charts');
    const reports = filled(o, o.reports.time, o.reports.per_second);
    chart(charts, { id: 'overview:reports', title: 'Reports', unit: 'per second', x: reports.x,
        window: win, group: 'overview', connect: false,
        series: [{ key: 'per_second', name: 'reports/s', values: reports.values }] });
    const perNode = (title, unit, key, values, opts) => {
        const m = merge(o.nodes.map((n) => {
            const counts = filled(o, n.time, n.connections);
            const all = values(n, counts.values, filled(o, n.time, n.with_issues).values,
                filled(o, n.time, n.bad).values);
            return { x: counts.x, values: all };
        }));
        chart(charts, { id: 'overview:' + key, title, unit, x: m.x, window: win,
            group: 'overview', connect: false, ...opts,
            series: o.nodes.map((n, i) => ({ key: n.node_name, name: n.node_name,
                values: m.columns[i], color: color(i) })) });
    };
    perNode('Active connections', 'rated in the bucket, per node', 'connections',
        (n, active) => active);
    perNode('With issues', '% of the active connections, per node', 'with_issues',
        (n, active, issues) => share(issues, active), { valueRange: [0, 100] });
    perNode('Bad', '% of the active connections, per node', 'bad',
        (n, active, issues, bad) => share(bad, active), { valueRange: [0, 100] });
    const table = byId('nodes');
    table.append(el('thead', {}, el('tr', {}, ['node', 'active (latest bucket)', 'peak',
        'with issues', 'bad'].map((h) => el('th', {}, h)))));
    table.append(el('tbody', {}, o.nodes.length ? o.nodes.map((n) => el('tr', {},
        el('td', {}, n.node_name ?? '-'),
        el('td', { class: 'n' }, n.connections[n.connections.length - 1] ?? 0),
        el('td', { class: 'n' }, Math.max(0, ...n.connections)),
        el('td', { class: 'n' }, num(sum(n.with_issues) * 100 / (sum(n.connections) || 1), 1) +
            ' %'),
        el('td', { class: 'n' }, num(sum(n.bad) * 100 / (sum(n.connections) || 1), 1) + ' %')))
        : el('tr', {}, el('td', { colspan: 5, class: 'none' },
            'No rated reports in this range.'))));
    document.body.dataset.ready = 'true';
}

main();
