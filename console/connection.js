// The connection page: its envelope and verdict (/api/connections/ID), the issues on a time
// axis shared with the charts of the connection and of each stream (/api/.../series), the
// candidate pair, and every stored sample as JSON (/api/.../samples).
import { api, bitrate, bool, byId, chart, clear, duration, el, facts, link, ms, num, pageId,
    paths, range, samples, showError, verdict, when, hasValues } from './common.js';

const id = pageId('/connection/');
const base = 'connections/' + encodeURIComponent(id);
const PAGE = 10;
const severityName = (n) => (n >= 2 ? 'bad' : n === 1 ? 'warning' : n === 0 ? 'ok' : 'unrated');

byId('title').textContent = id;
document.title = 'Kohaku: connection ' + id;

function envelope(c) {
    byId('envelope').append(facts([
        ['channel', link(paths.channel, c.channel_id)],
        ['client', c.client_id ?? '-'],
        ['session', c.session_id ?? '-'],
        ['bundle', c.bundle_id ?? '-'],
        ['role', c.role ?? '-'],
        ['multistream / simulcast / spotlight',
            `${bool(c.multistream)} / ${bool(c.simulcast)} / ${bool(c.spotlight)}`],
        ['label', c.label ?? '-'],
        ['Sora version', c.version ?? '-'],
        ['node', c.node_name ?? '-'],
        ['first seen (UTC)', when(c.first_seen)],
        ['last seen (UTC)', when(c.last_seen)],
        ['lifetime', duration((ms(c.last_seen) - ms(c.first_seen)) / 1000)],
    ]));
}

function quality(q) {
    if (!q) {
        byId('quality').append(el('p', { class: 'none' }, 'Not rated: no quality rows.'));
        return;
    }
    byId('verdict').append(verdict(q.verdict));
    byId('quality').append(facts([
        ['verdict', verdict(q.verdict)],
        ['uplink (what it sends)', verdict(q.uplink)],
        ['downlink (what it receives)', verdict(q.downlink)],
        ['audio MOS min / mean', `${num(q.mos_min)} / ${num(q.mos_avg)}`],
        ['video score min', num(q.video_score_min)],
        ['reports', q.reports ?? '-'],
        ['rated (UTC)', `${when(q.first_report)} .. ${when(q.last_report)}`],
        ['issues', String(q.issues.length)],
    ]));
}

function transport(t) {
    if (!t) {
        byId('transport').append(el('p', { class: 'none' }, 'No transport rated.'));
        return;
    }
    byId('transport').append(facts([
        ['selected pair', t.candidate_pair_id ?? '-'],
        ['local candidate', t.local_candidate_type ?? '-'],
        ['relay protocol', t.relay_protocol ?? '-'],
        ['browser', t.browser ?? '-'],
        ['connected', bool(t.connected)],
        ['round trip', t.round_trip_time_ms === null ? '-' : num(t.round_trip_time_ms, 0) + ' ms'],
        ['available outgoing', bitrate(t.available_bitrate)],
        ['sent / received', `${bitrate(t.send_bitrate)} / ${bitrate(t.receive_bitrate)}`],
    ]));
}

// The last rows of a table: each object's latest row is near its end (codecs, certificates
// and candidates have a row per change, not per report: README, "Unchanged objects").
async function latest(tables, table, n) {
    const t = tables.find((x) => x.table === table);
    if (!t)
        return [];
    return (await samples(id, table, Math.max(0, t.rows - n), n)).samples;
}

const endpoint = (c) => (c ? `${c.candidateType ?? '?'} ${c.protocol ?? ''} ` +
    `${c.address ?? c.ip ?? '?'}:${c.port ?? '?'}` +
    (c.relayProtocol ? ` (relay over ${c.relayProtocol})` : '') : '-');

async function pair(tables, t) {
    if (!t || !t.candidate_pair_id)
        return;
    const pairs = await latest(tables, 'rtc_ice_candidate_pair_stats', 100);
    const p = pairs.filter((x) => x.id === t.candidate_pair_id).pop();
    if (!p)
        return;
    const cands = await latest(tables, 'rtc_ice_candidate_stats', 200);
    const find = (cid) => cands.filter((x) => x.id === cid).pop();
    byId('pair').append(el('h3', {}, 'Selected candidate pair, as last reported'), facts([
        ['state', `${p.state ?? '-'}${p.nominated ? ', nominated' : ''}`],
        ['local', endpoint(find(p.localCandidateId))],
        ['remote', endpoint(find(p.remoteCandidateId))],
        ['current round trip', typeof p.currentRoundTripTime === 'number'
            ? num(p.currentRoundTripTime * 1000, 0) + ' ms' : '-'],
        ['bytes sent / received', `${p.bytesSent ?? '-'} / ${p.bytesReceived ?? '-'}`],
    ]));
}

function issues(q) {
    const table = byId('issues');
    const list = q ? q.issues : [];
    if (!list.length) {
        table.append(el('tbody', {}, el('tr', {}, el('td', { class: 'none' }, 'No issues.'))));
        return;
    }
    table.append(el('thead', {}, el('tr', {}, ['issue', 'severity', 'direction', 'kind',
        'stream', 'began (UTC)', 'ended', 'lasted', 'intervals', 'value'].map((h) =>
        el('th', {}, h)))));
    table.append(el('tbody', {}, list.map((s) => el('tr', { class: 'row-' + severityName(
        s.severity === 'bad' ? 2 : 1) },
    el('td', {}, s.issue), el('td', {}, verdict(s.severity)), el('td', {}, s.direction),
    el('td', {}, s.kind ?? '-'), el('td', { class: 'id' }, s.stats_id ?? '-'),
    el('td', { class: 'time' }, when(s.began)), el('td', { class: 'time' }, when(s.ended)),
    el('td', { class: 'n' }, duration((ms(s.ended) - ms(s.began)) / 1000)),
    el('td', { class: 'n' }, s.intervals ?? '-'),
    el('td', { class: 'n' }, s.value_min === s.value_max ? num(s.value_min)
        : `${num(s.value_min)} .. ${num(s.value_max)}`)))));
}

const spansOf = (list) => list.map((s) => ({ from: ms(s.began), to: ms(s.ended),
    severity: s.severity, issue: s.issue, stats_id: s.stats_id, direction: s.direction,
    kind: s.kind }));

// What each stream's charts show: [title, unit, [[key, name], ...], options].
const STREAM_CHARTS = [
    ['Bitrate', 'bit/s', [['bitrate', 'bitrate']], { kmb: true }],
    ['Packets', 'per second', [['packet_rate', 'packets/s']]],
    ['Loss', '%', [['loss_percent', 'loss']]],
    ['Jitter', 'ms', [['jitter_ms', 'jitter'], ['jitter_buffer_ms', 'jitter buffer']]],
    ['Round trip', 'ms', [['round_trip_time_ms', 'RTT']]],
    ['Frame rate', 'frames/s', [['frames_per_second', 'frames/s'],
        ['source_frames_per_second', 'captured']]],
    ['Resolution', 'frame height, px', [['frame_height', 'height']]],
    ['Freezes', 'count, seconds', [['freezes', 'freezes'], ['freeze_seconds', 'frozen s'],
        ['pauses', 'pauses'], ['pause_seconds', 'paused s']]],
    ['Concealment', '% of samples', [['concealment_percent', 'concealed']]],
    ['Quality limitation', '% of the interval', [['limitation_bandwidth_percent', 'bandwidth'],
        ['limitation_cpu_percent', 'cpu'], ['limitation_other_percent', 'other']]],
    ['Audio MOS', '1 to 4.5', [['mos', 'MOS']], { valueRange: [1, 4.6] }],
    ['Video score', '1 to 5', [['video_score', 'score']], { valueRange: [1, 5.1] }],
];

function streamCharts(parent, s, spans, win) {
    for (const [title, unit, keys, opts] of STREAM_CHARTS) {
        const series = keys.filter(([k]) => s[k] && hasValues(s[k]))
            .map(([key, name]) => ({ key, name, values: s[key] }));
        if (!series.length)
            continue;
        chart(parent, { id: `${s.direction}:${s.stats_id}:${keys[0][0]}`, title, unit,
            x: s.time, series, spans, window: win, group: 'connection', ...opts });
    }
}

function streams(q, series, win) {
    const box = byId('streams');
    const allSpans = spansOf(q ? q.issues : []);
    if (!series.streams.length)
        box.append(el('p', { class: 'none' }, 'No RTP streams rated.'));
    for (const s of series.streams) {
        const sum = (q ? q.streams : []).find((x) => x.stats_id === s.stats_id &&
            x.direction === s.direction);
        const section = el('section', { class: 'stream' });
        section.append(el('h3', {}, `${s.kind ?? '?'} ${s.direction} ${s.codec ?? ''} `,
            el('code', {}, s.stats_id), ' ', sum ? verdict(severityName(sum.severity)) : ''));
        if (sum)
            section.append(el('p', {}, `${sum.intervals ?? 0} rated intervals; mean bitrate ` +
                `${bitrate(sum.bitrate_avg)}, loss ${num(sum.loss_percent_avg)} % (max ` +
                `${num(sum.loss_percent_max)} %), RTT ${num(sum.round_trip_time_ms_avg, 0)} ms` +
                (s.kind === 'audio' ? `, MOS ${num(sum.mos_avg)} (min ${num(sum.mos_min)})`
                    : `, score ${num(sum.video_score_avg)} (min ${num(sum.video_score_min)})`)));
        const grid = el('div', { class: 'charts' });
        section.append(grid);
        box.append(section);
        streamCharts(grid, s, allSpans.filter((x) => x.stats_id === s.stats_id &&
            x.direction === s.direction), win);
    }
}

function connectionCharts(q, c, win) {
    const all = spansOf(q ? q.issues : []);
    const own = all.filter((s) => s.direction === 'connection');
    const lanes = all.map((s) => ({ ...s,
        text: `${s.severity} ${s.issue} ${s.direction} ${s.kind ?? ''}` }));
    if (c.time.length && lanes.length)
        chart(byId('timeline'), { id: 'timeline', title: 'Issues over time',
            unit: 'one bar per issue span', x: c.time,
            series: [{ key: 'severity', name: 'severity', values: c.severity, hidden: true }],
        lanes, window: win, group: 'connection', step: true, valueRange: [-0.1, 2.1],
        wide: true });
    const parent = byId('connection-charts');
    const add = (title, unit, keys, opts) => {
        const series = keys.filter(([k]) => hasValues(c[k] || []))
            .map(([key, name]) => ({ key, name, values: c[key] }));
        if (series.length)
            chart(parent, { id: 'connection:' + keys[0][0], title, unit, x: c.time, series,
                spans: own, window: win, group: 'connection', ...opts });
    };
    add('Round trip (selected pair)', 'ms', [['round_trip_time_ms', 'RTT']]);
    add('Transport bitrate', 'bit/s', [['send_bitrate', 'sent'],
        ['receive_bitrate', 'received'], ['available_bitrate', 'available outgoing']],
    { kmb: true });
    add('Worst scores', 'MOS 1 to 4.5, video 1 to 5', [['mos_min', 'audio MOS'],
        ['video_score_min', 'video score']], { valueRange: [1, 5.1] });
    add('Pair changes', 'count', [['pair_changes', 'changes']]);
}

/* --- the samples viewer --------------------------------------------------------------------- */

function viewer(tables) {
    const select = byId('table');
    const q = new URLSearchParams(location.search);
    for (const t of tables)
        select.append(el('option', { value: t.table }, `${t.table} (${t.rows}` +
            `${t.computed ? ', computed by kohaku' : ''})`));
    if (!tables.length) {
        byId('sample-list').append(el('p', { class: 'none' }, 'No stored samples.'));
        return;
    }
    const wanted = q.get('table');
    select.value = tables.some((t) => t.table === wanted) ? wanted
        : (tables.find((t) => t.table === 'rtc_inbound_rtp_stream_stats') || tables[0]).table;
    let offset = Math.max(0, parseInt(q.get('offset') || '0', 10) || 0);
    const show = async () => {
        const t = tables.find((x) => x.table === select.value);
        const list = clear(byId('sample-list'));
        const u = new URL(location.href);
        u.searchParams.set('table', t.table);
        u.searchParams.set('offset', offset);
        history.replaceState(null, '', u.pathname + u.search);
        byId('position').textContent = `rows ${Math.min(offset + 1, t.rows)}..` +
            `${Math.min(offset + PAGE, t.rows)} of ${t.rows}`;
        byId('prev').disabled = offset === 0;
        byId('next').disabled = offset + PAGE >= t.rows;
        let answer;
        try {
            answer = await samples(id, t.table, offset, PAGE);
        } catch (e) {
            showError(e);
            return;
        }
        for (const s of answer.samples) {
            if (typeof s.extra === 'string') {
                try {
                    s.extra = JSON.parse(s.extra);
                } catch (e) { /* shown as the text it is */ }
            }
            const pre = el('pre', { class: 'sample' });
            pre.textContent = JSON.stringify(s, null, 2);
            list.append(el('div', { class: 'sample-head' },
                `${when(s.time)} UTC  ${s.type ?? ''}  `, el('code', {}, String(s.id ?? ''))), pre);
        }
    };
    select.addEventListener('change', () => { offset = 0; show(); });
    byId('prev').addEventListener('click', () => { offset = Math.max(0, offset - PAGE); show(); });
    byId('next').addEventListener('click', () => { offset += PAGE; show(); });
    show();
}

async function main() {
    let c;
    try {
        c = await api(base);
    } catch (e) {
        showError(e);
        document.body.dataset.ready = 'error';
        return;
    }
    envelope(c.connection);
    quality(c.quality);
    transport(c.transport);
    issues(c.quality);
    viewer(c.tables);
    const paired = pair(c.tables, c.transport).catch(showError);
    let s;
    try {
        s = await api(base + '/series');
    } catch (e) {
        showError(e);
        document.body.dataset.ready = 'error';
        return;
    }
    const win = range(s.connection.time, ...s.streams.map((x) => x.time));
    connectionCharts(c.quality, s.connection, win);
    streams(c.quality, s, win);
    await paired;
    document.body.dataset.ready = 'true';
}

main();
