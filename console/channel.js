// The channel page: every participant's verdict and whose uplink its downlink issues are put
// down to (/api/channels/ID, "quality"), and all participants on one time axis ("series").
import { api, byId, chart, color, el, link, merge, ms, num, pageId, paths, range, showError,
    verdict, when } from './common.js';

const id = pageId('/channel/');
byId('title').textContent = id;
document.title = 'Kohaku: channel ' + id;

const nameOf = (p) => p.client_id ?? p.connection_id;
// The attribution lists are names separated by blanks.
const names = (text, name) => (' ' + (text || '') + ' ').includes(' ' + name + ' ');

// The participants whose uplink others' downlink issues are put down to; else those with
// uplink issues of their own.
function culprits(ps) {
    const blamed = ps.filter((p) => ps.some((o) => o !== p &&
        names(o.downlink_from_others_uplink, nameOf(p))));
    return blamed.length ? blamed : ps.filter((p) => p.uplink && p.uplink !== 'ok');
}

function summary(ps, bad) {
    const box = byId('summary');
    if (bad.length) {
        for (const p of bad) {
            const seen = ps.filter((o) => o !== p && names(o.downlink_from_others_uplink,
                nameOf(p))).map(nameOf);
            box.append(el('div', {}, el('span', { class: 'culprit-mark' }, 'The problem: '),
                `${nameOf(p)}'s uplink (${p.uplink_issues || p.uplink})` +
                (seen.length ? `, seen in the downlink of ${seen.join(', ')}.` : '.')));
        }
    }
    for (const p of ps.filter((x) => x.downlink_own))
        box.append(el('div', {}, `${nameOf(p)}'s own downlink: ${p.downlink_own}.`));
    if (!box.firstChild)
        box.append(ps.every((p) => p.verdict === 'ok') ? 'No issues in this channel.'
            : 'Issues, but no uplink to put them down to.');
}

function participants(ps, bad) {
    const table = byId('participants');
    table.append(el('thead', {}, el('tr', {}, ['participant', 'connection', 'verdict',
        'uplink', 'downlink', 'downlink issues put down to', 'connection issues', 'MOS min',
        'MOS mean', 'video min', 'reports', 'rated (UTC)'].map((h) => el('th', {}, h)))));
    table.append(el('tbody', {}, ps.map((p, i) => {
        const swatch = el('span', { class: 'swatch' });
        swatch.style.backgroundColor = color(i);
        const culprit = bad.includes(p);
        return el('tr', { class: culprit ? 'culprit' : null, 'data-connection': p.connection_id },
            el('td', {}, swatch, culprit ? el('span', { class: 'culprit-mark' }, '! ') : '',
                p.client_id ?? '-'),
            el('td', { class: 'id' }, link(paths.connection, p.connection_id)),
            el('td', {}, verdict(p.verdict)),
            el('td', {}, verdict(p.uplink), ' ', p.uplink_issues || ''),
            el('td', {}, verdict(p.downlink), ' ', p.downlink_issues || ''),
            el('td', {}, [p.downlink_from_others_uplink ? 'the uplink of ' +
                p.downlink_from_others_uplink : '', p.downlink_own ? 'its own downlink (' +
                p.downlink_own + ')' : ''].filter(Boolean).join('; ') || '-'),
            el('td', {}, p.connection_issues || '-'),
            el('td', { class: 'n' }, num(p.mos_min)),
            el('td', { class: 'n' }, num(p.mos_avg)),
            el('td', { class: 'n' }, num(p.video_score_min)),
            el('td', { class: 'n' }, p.reports ?? '-'),
            el('td', { class: 'time' }, p.first_report ? `${when(p.first_report)} .. ` +
                when(p.last_report).slice(11) : '-'));
    })));
}

const CHARTS = [
    ['inbound_bitrate', 'Inbound bitrate', 'bit/s, what each receives', { kmb: true }],
    ['outbound_bitrate', 'Outbound bitrate', 'bit/s, what each sends', { kmb: true }],
    ['loss_percent', 'Loss', '%, worst stream'],
    ['round_trip_time_ms', 'Round trip', 'ms, mean of the streams'],
    ['frames_per_second', 'Frame rate', 'frames/s, mean of the video streams'],
];

function charts(ps, series, bad) {
    const who = byId('who');
    ps.forEach((p, i) => {
        const swatch = el('span', { class: 'swatch' });
        swatch.style.backgroundColor = color(i);
        who.append(el('span', { class: 'item' }, swatch, nameOf(p)));
    });
    const win = range(...ps.map((p) => (series[p.connection_id] || { time: [] }).time));
    const spans = (bad.length ? bad : ps).flatMap((p) => (p.issues || [])
        .filter((s) => !bad.length || s.direction === 'outbound')
        .map((s) => ({ from: ms(s.began), to: ms(s.ended), severity: s.severity })));
    for (const [key, title, unit, opts] of CHARTS) {
        const parts = ps.map((p) => {
            const s = series[p.connection_id] || { time: [] };
            return { x: s.time, values: s[key] || [] };
        });
        const m = merge(parts);
        chart(byId('charts'), { id: 'channel:' + key, title, unit, x: m.x, window: win,
            group: 'channel', spans, ...opts,
            series: ps.map((p, i) => ({ key: p.connection_id, name: nameOf(p),
                values: m.columns[i], color: color(i), width: bad.includes(p) ? 3 : 1.5 })) });
    }
}

async function main() {
    let c;
    try {
        c = await api('channels/' + encodeURIComponent(id));
    } catch (e) {
        showError(e);
        document.body.dataset.ready = 'error';
        return;
    }
    const ps = c.quality.participants;
    const bad = culprits(ps);
    summary(ps, bad);
    participants(ps, bad);
    charts(ps, c.series, bad);
    document.body.dataset.ready = 'true';
}

main();
