// The connections page: GET /api/connections with the time range, filters, order and page of
// the location's query (so a link or a reload shows the same list).
import { api, byId, clear, duration, el, link, num, paths, showError, verdict, when }
    from './common.js';

const KEYS = ['last', 'from', 'to', 'channel', 'client', 'label', 'node', 'browser', 'verdict',
    'sort', 'page', 'per_page'];
const PRESETS = ['1h', '6h', '24h', '7d'];
const form = byId('filters');

// The query's keys that are set, in a fixed order.
function state() {
    const q = new URLSearchParams(location.search);
    const s = new URLSearchParams();
    for (const k of KEYS)
        if (q.get(k))
            s.set(k, q.get(k));
    if (!s.has('from') && !s.has('to') && !s.has('last'))
        s.set('last', '1h');
    return s;
}

// This page's URL with some keys changed (null drops a key).
function withState(changes) {
    const s = state();
    for (const [k, v] of Object.entries(changes)) {
        if (v === null || v === '')
            s.delete(k);
        else
            s.set(k, v);
    }
    return '?' + s.toString();
}

// datetime-local (UTC) <-> RFC 3339 with a fraction, as the API wants it.
const toInput = (t) => (t ? t.slice(0, 19) : '');
const fromInput = (v) => (v ? (v.length === 16 ? v + ':00' : v.slice(0, 19)) + '.000Z' : '');

function fill(s) {
    for (const k of ['channel', 'client', 'label', 'node', 'browser', 'verdict'])
        form.elements[k].value = s.get(k) || '';
    form.elements.sort.value = s.get('sort') || 'worst';
    form.elements.per_page.value = s.get('per_page') || '50';
    form.elements.from.value = toInput(s.get('from'));
    form.elements.to.value = toInput(s.get('to'));
    const presets = clear(byId('presets'));
    for (const p of PRESETS) {
        const on = !s.has('from') && !s.has('to') && s.get('last') === p;
        presets.append(el('a', { href: withState({ last: p, from: null, to: null, page: null }),
            class: on ? 'preset on' : 'preset' }, 'last ' + p), ' ');
    }
}

form.addEventListener('submit', (event) => {
    event.preventDefault();
    const changes = { page: null };
    for (const k of ['channel', 'client', 'label', 'node', 'browser', 'verdict', 'sort',
        'per_page'])
        changes[k] = form.elements[k].value.trim();
    changes.from = fromInput(form.elements.from.value);
    changes.to = fromInput(form.elements.to.value);
    if (changes.from || changes.to)
        changes.last = null;
    else if (!state().has('last'))
        changes.last = '1h';
    history.pushState(null, '', withState(changes));
    show();
});
window.addEventListener('popstate', show);

function row(c) {
    return el('tr', { class: 'row-' + (['ok', 'warning', 'bad'].includes(c.verdict) ? c.verdict
        : 'unrated'), 'data-connection': c.connection_id },
    el('td', { class: 'id' }, link(paths.connection, c.connection_id)),
    el('td', {}, link(paths.channel, c.channel_id)),
    el('td', {}, c.client_id ?? '-'),
    el('td', { class: 'word' }, c.role ?? '-'),
    el('td', { class: 'word' }, c.browser ?? '-'),
    el('td', { class: 'time' }, when(c.first_seen)),
    el('td', { class: 'n' }, duration(c.seconds)),
    el('td', {}, verdict(c.verdict)),
    el('td', {}, verdict(c.uplink)),
    el('td', {}, verdict(c.downlink)),
    el('td', { class: 'n' }, num(c.mos_min)),
    el('td', { class: 'n' }, num(c.mos_avg)),
    el('td', { class: 'n' }, num(c.video_score_min)));
}

async function show() {
    const s = state();
    fill(s);
    document.body.dataset.ready = 'loading';
    const body = clear(byId('list').tBodies[0]);
    let answer;
    try {
        answer = await api('connections', s);
    } catch (e) {
        showError(e);
        document.body.dataset.ready = 'error';
        return;
    }
    byId('error').hidden = true;
    clear(byId('error'));
    const counts = clear(byId('counts'));
    counts.append(`${when(answer.from)} .. ${when(answer.to)} UTC: `);
    for (const v of ['all', 'bad', 'warning', 'ok', 'unrated']) {
        const current = (s.get('verdict') || 'all') === v;
        counts.append(el('a', { href: withState({ verdict: v === 'all' ? null : v, page: null }),
            class: 'count c-' + v + (current ? ' on' : ''), 'data-verdict': v },
        `${v} ${answer.counts[v]}`), ' ');
    }
    body.append(...answer.rows.map(row));
    if (!answer.rows.length)
        body.append(el('tr', {}, el('td', { colspan: 13, class: 'none' },
            answer.page > 1 ? 'No connections on this page.' : 'No connections in this range.')));
    const pages = Math.max(1, Math.ceil(answer.total / answer.per_page));
    const pager = clear(byId('pager'));
    if (answer.page > 1)
        pager.append(el('a', { href: withState({ page: answer.page - 1 }), rel: 'prev' },
            '< previous'), ' ');
    pager.append(`page ${answer.page} of ${pages} (${answer.total} connections)`);
    if (answer.page < pages)
        pager.append(' ', el('a', { href: withState({ page: answer.page + 1 }), rel: 'next' },
            'next >'));
    document.body.dataset.ready = 'true';
}

show();
