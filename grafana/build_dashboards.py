#!/usr/bin/python3
"""Writes grafana/dashboards/*.json: the Overview, Connection and Channel dashboards.
The dashboards are generated so that every panel has the same shape (datasource through the
${datasource} variable, SQL against kohaku's tables and rate views); edit this file and run
it, then commit both. The test suite checks that the JSON is this script's output."""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "grafana-postgresql-datasource", "uid": "${datasource}"}


def ds_var():
    return {"name": "datasource", "label": "Database", "type": "datasource",
            "query": "grafana-postgresql-datasource", "current": {}, "hide": 0}


def query_var(name, label, sql, multi=True):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "definition": sql, "query": sql, "refresh": 2, "sort": 1, "hide": 0,
         "multi": multi, "includeAll": multi, "current": {}, "options": []}
    return v


_ids = [0]


def panel(title, sql, kind="timeseries", fmt="time_series", w=12, h=8, unit=None,
          overrides=None, description=None, defaults=None):
    _ids[0] += 1
    p = {"id": _ids[0], "type": kind, "title": title, "datasource": DS,
         "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
         "targets": [{"refId": "A", "datasource": DS, "editorMode": "code", "format": fmt,
                      "rawQuery": True, "rawSql": sql}],
         "fieldConfig": {"defaults": {}, "overrides": overrides or []},
         "options": {}}
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    p["fieldConfig"]["defaults"].update(defaults or {})
    if description:
        p["description"] = description
    return p


def layout(panels):
    x = y = row_h = 0
    for p in panels:
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
    return panels


def dashboard(uid, title, variables, panels, links=(), annotations=()):
    return {"uid": uid, "title": title, "tags": ["kohaku", "webrtc"], "timezone": "utc",
            "schemaVersion": 39, "version": 1, "editable": True, "refresh": "30s",
            "time": {"from": "now-6h", "to": "now"},
            "templating": {"list": variables}, "panels": layout(panels),
            "links": list(links), "annotations": {"list": list(annotations)}}


def annotation(name, color, sql):
    """An annotation query: Grafana reads its time, timeend, text and tags columns."""
    return {"name": name, "datasource": DS, "enable": True, "hide": False, "iconColor": color,
            "target": {"refId": "Anno", "datasource": DS, "editorMode": "code",
                       "format": "table", "rawQuery": True, "rawSql": sql}}


# Kohaku's severities (0, 1, 2) and verdicts as words and colours, in tables and timelines.
SEVERITY_WORDS = {"0": ("ok", "green"), "1": ("warning", "orange"), "2": ("bad", "red")}
SEVERITY_MAPPING = {"type": "value", "options": dict(
    [(k, {"text": t, "color": c, "index": int(k)}) for k, (t, c) in SEVERITY_WORDS.items()] +
    [(t, {"color": c, "index": 3 + int(k)}) for k, (t, c) in SEVERITY_WORDS.items()])}
SEVERITY_COLOURS = {"type": "value", "options": {
    k: {"color": c, "index": int(k)} for k, (t, c) in SEVERITY_WORDS.items()}}


def severity_cells(pattern, words=True):
    """Columns matching pattern on their severity's colour; severities as words, or kept as
    numbers (words=False)."""
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": "mappings",
                            "value": [SEVERITY_MAPPING if words else SEVERITY_COLOURS]},
                           {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}


TIMELINE = {"mappings": [SEVERITY_MAPPING], "color": {"mode": "thresholds"}}

# The quality panels read kohaku's ratings: quality_stream (a row per RTP stream per report),
# quality_connection (a row per report), and the views quality_issue_span and
# quality_connection_verdict (schema version 5). A span is in the time range when it
# overlaps it.
SPAN_IN_RANGE = "began <= $__timeTo() AND ended >= $__timeFrom()"


CONN_FILTER = ("channel_id IN ($channel) AND label IN ($label) AND node_name IN ($node) "
               "AND client_id IN ($client)")

# The connections seen in the time range. last_seen is not indexed (schema version 9), the
# hour of it is: the first condition finds the rows by the index, the second is exact.
SEEN = "last_seen_hour >= floor($__unixEpochFrom() / 3600) AND $__timeFilter(last_seen)"
SEEN_C = SEEN.replace("last_seen", "c.last_seen")

# --- Overview -------------------------------------------------------------------------------

CONNECTION_LINK = {
    "title": "Open this connection",
    "url": "/d/kohaku-connection/kohaku-connection?var-connection_id=${__value.raw}"
           "&from=${__data.fields.from_ms}&to=${__data.fields.to_ms}&${datasource:queryparam}"}


def hidden(name):
    return {"matcher": {"id": "byName", "options": name},
            "properties": [{"id": "custom.hidden", "value": True}]}


LINKED = [{"matcher": {"id": "byName", "options": "connection_id"},
           "properties": [{"id": "links", "value": [CONNECTION_LINK]}]},
          hidden("from_ms"), hidden("to_ms")]
LIFETIME = ("(extract(epoch FROM c.first_seen) * 1000 - 60000)::bigint AS from_ms,\n"
            "  (extract(epoch FROM c.last_seen) * 1000 + 60000)::bigint AS to_ms")


def verdict_list(where):
    """Connections (sora_connection c, filtered by where) with their verdict over all their
    reports (quality_connection_verdict) and every issue they had, worst first. OFFSET 0 keeps
    the verdict a lookup per listed connection (PostgreSQL would otherwise join the view as a
    whole, aggregating every connection's reports)."""
    return ("SELECT c.channel_id, c.connection_id, c.client_id, c.role, c.node_name, v.verdict, "
            "v.severity, v.severity_outbound AS uplink, v.severity_inbound AS downlink, "
            "v.mos_min, v.mos_avg, v.video_score_min,\n"
            "  (SELECT string_agg(DISTINCT n, ' ' ORDER BY n) FROM quality_connection q, "
            "regexp_split_to_table(q.issue_names, ' ') n\n"
            "   WHERE q.connection_id = c.connection_id AND n <> '') AS issue_names,\n"
            "  c.first_seen, c.last_seen, " + LIFETIME + "\n"
            "FROM sora_connection c LEFT JOIN LATERAL (SELECT verdict, severity, "
            "severity_outbound, severity_inbound, mos_min, mos_avg, video_score_min\n"
            "  FROM quality_connection_verdict v WHERE v.connection_id = c.connection_id "
            "OFFSET 0) v ON true\n"
            f"WHERE {where}\n"
            "ORDER BY v.severity DESC NULLS LAST, v.mos_min NULLS LAST, "
            "v.video_score_min NULLS LAST, c.last_seen DESC LIMIT 500")


VERDICT_CELLS = [severity_cells("^(verdict|uplink|downlink)$"),
                 severity_cells("^severity$", words=False)]


overview = dashboard(
    "kohaku-overview", "Kohaku: overview",
    [ds_var(),
     query_var("channel", "Channel", "SELECT DISTINCT channel_id FROM sora_connection "
               "WHERE " + SEEN + " ORDER BY 1"),
     query_var("label", "Label", "SELECT DISTINCT label FROM sora_connection "
               "WHERE " + SEEN + " ORDER BY 1"),
     query_var("node", "Node", "SELECT DISTINCT node_name FROM sora_connection "
               "WHERE " + SEEN + " ORDER BY 1"),
     query_var("client", "Client", "SELECT DISTINCT client_id FROM sora_connection "
               "WHERE " + SEEN + " AND channel_id IN ($channel) ORDER BY 1")],
    # a connection's reports join on source (its connection_id): the column sora_report is
    # distributed by on Citus, so that the join runs shard by shard there
    [panel("Reports", "SELECT $__timeGroupAlias(r.\"time\", $__interval), count(*) AS reports "
           "FROM sora_report r JOIN sora_connection c ON c.connection_id = r.source "
           "WHERE $__timeFilter(r.\"time\") AND r.kind = 'connection' AND c." +
           CONN_FILTER.replace(" AND ", " AND c.") + " GROUP BY 1 ORDER BY 1", unit="short"),
     panel("Connections reporting", "SELECT $__timeGroupAlias(r.\"time\", $__interval), "
           "count(DISTINCT r.connection_id) AS connections FROM sora_report r JOIN "
           "sora_connection c ON c.connection_id = r.source WHERE "
           "$__timeFilter(r.\"time\") AND r.kind = 'connection' AND c." +
           CONN_FILTER.replace(" AND ", " AND c.") + " GROUP BY 1 ORDER BY 1", unit="short"),
     panel("Latest connections",
           "SELECT c.channel_id, c.connection_id, c.client_id, c.role, c.label, c.node_name, "
           "c.first_seen, c.last_seen,\n"
           "  CASE WHEN EXISTS (SELECT 1 FROM rtc_ice_candidate_pair_stats p WHERE "
           "p.connection_id = c.connection_id AND p.selected IS NOT NULL) THEN 'Firefox'\n"
           "       WHEN EXISTS (SELECT 1 FROM rtc_certificate_stats p WHERE "
           "p.connection_id = c.connection_id) THEN 'Chromium' END AS browser,\n"
           "  (extract(epoch FROM c.first_seen) * 1000 - 60000)::bigint AS from_ms,\n"
           "  (extract(epoch FROM c.last_seen) * 1000 + 60000)::bigint AS to_ms\n"
           "FROM sora_connection c WHERE " + SEEN_C + " AND c." +
           CONN_FILTER.replace(" AND ", " AND c.") + " ORDER BY c.last_seen DESC LIMIT 500",
           kind="table", fmt="table", w=24, h=12,
           overrides=LINKED,
           description="Click a connection id to open its dashboard over its lifetime."),
     panel("Connections by quality, worst first",
           verdict_list(SEEN_C + " AND c." +
                        CONN_FILTER.replace(" AND ", " AND c.")),
           kind="table", fmt="table", w=24, h=12, overrides=LINKED + VERDICT_CELLS,
           description="Kohaku's verdict on each connection seen in the time range, over all "
                       "its reports (quality_connection_verdict): the worst severity, that of "
                       "its uplink (what it sends) and downlink (what it receives), the lowest "
                       "and mean audio MOS, the lowest video score and every issue it had. "
                       "Click a connection id to open its dashboard.")])

# --- Connection -----------------------------------------------------------------------------

WHERE_CONN = "connection_id = '$connection_id' AND $__timeFilter(\"time\")"


def rate_panel(title, view, column, unit, kind=None, w=8):
    k = f" AND kind = '{kind}'" if kind else ""
    return panel(title, f"SELECT \"time\", stats_id || ' ' || coalesce(kind, '') AS metric, "
                 f"{column} AS value FROM {view} WHERE {WHERE_CONN}{k} ORDER BY 1",
                 unit=unit, w=w)


STREAM = "replace(stats_type, '-rtp', '') || ' ' || coalesce(kind, '') || ' ' || stats_id"
SPANS = f"quality_issue_span WHERE connection_id = '$connection_id' AND {SPAN_IN_RANGE}"


def stream_panel(title, column, unit, extra="", w=6, defaults=None):
    return panel(title, f"SELECT \"time\", {STREAM} AS metric, {column} AS value FROM "
                 f"quality_stream WHERE {WHERE_CONN}{extra} AND {column} IS NOT NULL "
                 "ORDER BY 1", unit=unit, w=w, defaults=defaults)


def span_annotation(severity, color):
    return annotation(
        f"Issues ({severity})", color,
        "SELECT began AS \"time\", ended AS timeend,\n"
        "  concat_ws(' ', issue, severity, '-', stats_type, kind, stats_id) || ', ' ||\n"
        "    CASE WHEN value_min IS NOT NULL THEN format('value %s to %s, ', "
        "round(value_min::numeric, 2), round(value_max::numeric, 2)) ELSE '' END ||\n"
        "    intervals || CASE intervals WHEN 1 THEN ' interval' ELSE ' intervals' END AS text,\n"
        "  concat_ws(',', issue, severity, kind) AS tags\n"
        f"FROM {SPANS} AND severity = '{severity}' ORDER BY 1")


QUALITY_PANELS = [
    panel("Verdict", "SELECT verdict, severity, severity_outbound AS uplink, "
          "severity_inbound AS downlink, mos_min, mos_avg, video_score_min, seconds, reports, "
          "first_report, last_report FROM quality_connection_verdict WHERE connection_id = "
          "'$connection_id'", kind="table", fmt="table", w=24, h=4,
          overrides=VERDICT_CELLS,
          description="Kohaku's verdict over all the connection's reports, whatever the time "
                      "range: the worst severity (uplink: its outbound streams, downlink: its "
                      "inbound ones), the lowest and mean audio MOS, the lowest video score."),
    panel("Issue spans", "SELECT began, ended, extract(epoch FROM ended - began) AS seconds, "
          "issue, severity, stats_type, kind, stats_id, intervals, value_min, value_max FROM " +
          SPANS + " ORDER BY began, issue, stats_id", kind="table", fmt="table", w=24,
          overrides=[severity_cells("^severity$")],
          description="Each span of an issue (quality_issue_span) overlapping the time range: "
                      "when it began and ended, its worst severity, the stream (stats_type "
                      "connection: the connection's own), the intervals it held and the "
                      "range of its value. The spans are also annotations on the graphs."),
    panel("Severity per stream", "SELECT \"time\", " + STREAM + " AS metric, severity AS "
          "value FROM quality_stream WHERE " + WHERE_CONN + " UNION ALL SELECT \"time\", "
          "'connection', severity FROM quality_connection WHERE " + WHERE_CONN + " ORDER BY 1",
          kind="state-timeline", w=24, h=7, defaults=TIMELINE,
          description="Each interval's worst issue per RTP stream, and the connection's (the "
                      "worst of all)."),
    stream_panel("Audio MOS per stream", "mos", "none", " AND kind = 'audio'", w=8,
                 defaults={"min": 1, "max": 4.5, "decimals": 2}),
    stream_panel("Video score per stream", "video_score", "none", " AND kind = 'video'", w=8,
                 defaults={"min": 1, "max": 5, "decimals": 2}),
    panel("Quality limitation shares", "SELECT q.\"time\", q.stats_id || ' ' || l.reason AS "
          "metric, l.share AS value FROM quality_stream q CROSS JOIN LATERAL (VALUES "
          "('bandwidth', q.limitation_bandwidth_percent), ('cpu', q.limitation_cpu_percent), "
          "('other', q.limitation_other_percent)) l (reason, share) WHERE "
          "q.connection_id = '$connection_id' AND $__timeFilter(q.\"time\") AND "
          "l.share IS NOT NULL ORDER BY 1", unit="percent", w=8,
          defaults={"min": 0, "max": 100},
          description="Outbound video: the share of each interval the encoder was limited by "
                      "bandwidth, CPU or otherwise."),
    stream_panel("Loss per stream", "loss_percent", "percent"),
    stream_panel("Round-trip time per stream", "round_trip_time_ms", "ms"),
    stream_panel("Jitter per stream", "jitter_ms", "ms"),
    stream_panel("Bitrate per stream", "bitrate", "bps"),
]

connection = dashboard(
    "kohaku-connection", "Kohaku: connection",
    [ds_var(),
     query_var("connection_id", "Connection", "SELECT connection_id FROM sora_connection "
               "WHERE " + SEEN + " ORDER BY last_seen DESC LIMIT 1000",
               multi=False)],
    [panel("Envelope", "SELECT channel_id, connection_id, session_id, client_id, bundle_id, "
           "role, multistream, simulcast, spotlight, label, version, node_name, first_seen, "
           "last_seen FROM sora_connection WHERE connection_id = '$connection_id'",
           kind="table", fmt="table", w=24, h=5)] + QUALITY_PANELS +
    [rate_panel("Inbound audio bitrate", "rtc_inbound_rtp_rates", "bitrate", "bps", "audio"),
     rate_panel("Inbound audio packets/s", "rtc_inbound_rtp_rates", "packets_per_second",
                "pps", "audio"),
     rate_panel("Inbound audio loss", "rtc_inbound_rtp_rates", "loss_percent", "percent",
                "audio"),
     rate_panel("Inbound audio jitter", "rtc_inbound_rtp_rates", "jitter_ms", "ms", "audio"),
     rate_panel("Inbound audio jitter-buffer delay per sample", "rtc_inbound_rtp_rates",
                "jitter_buffer_delay_ms", "ms", "audio"),
     rate_panel("Inbound audio concealment", "rtc_inbound_rtp_rates", "concealment_percent",
                "percent", "audio"),
     rate_panel("Inbound video bitrate", "rtc_inbound_rtp_rates", "bitrate", "bps", "video"),
     rate_panel("Inbound video packets/s", "rtc_inbound_rtp_rates", "packets_per_second",
                "pps", "video"),
     rate_panel("Inbound video loss", "rtc_inbound_rtp_rates", "loss_percent", "percent",
                "video"),
     rate_panel("Inbound video jitter", "rtc_inbound_rtp_rates", "jitter_ms", "ms", "video"),
     rate_panel("Inbound video jitter-buffer delay per frame", "rtc_inbound_rtp_rates",
                "jitter_buffer_delay_ms", "ms", "video"),
     rate_panel("Inbound video frames/s", "rtc_inbound_rtp_rates", "frames_per_second",
                "fps", "video"),
     rate_panel("Inbound video freezes", "rtc_inbound_rtp_rates", "freezes", "short",
                "video"),
     rate_panel("Inbound video decode time per frame", "rtc_inbound_rtp_rates",
                "decode_ms_per_frame", "ms", "video"),
     panel("Inbound video resolution", "SELECT \"time\", stats_id || ' width' AS metric, "
           "frame_width AS value FROM rtc_inbound_rtp_rates WHERE " + WHERE_CONN +
           " AND kind = 'video' UNION ALL SELECT \"time\", stats_id || ' height', frame_height "
           "FROM rtc_inbound_rtp_rates WHERE " + WHERE_CONN + " AND kind = 'video' ORDER BY 1",
           unit="short", w=8),
     rate_panel("Outbound bitrate", "rtc_outbound_rtp_rates", "bitrate", "bps"),
     rate_panel("Outbound target bitrate", "rtc_outbound_rtp_rates", "target_bitrate", "bps"),
     rate_panel("Outbound video frames/s", "rtc_outbound_rtp_rates", "frames_per_second",
                "fps", "video"),
     panel("Outbound video resolution and encoder", "SELECT \"time\", stats_id, frame_width, "
           "frame_height, encoder_implementation, scalability_mode FROM rtc_outbound_rtp_rates "
           "WHERE " + WHERE_CONN + " AND kind = 'video' ORDER BY 1 DESC", kind="table",
           fmt="table", w=12),
     panel("Outbound quality limitation", "SELECT \"time\", stats_id, "
           "quality_limitation_reason, quality_limitation_durations::text AS durations "
           "FROM rtc_outbound_rtp_rates WHERE " + WHERE_CONN +
           " AND quality_limitation_reason IS NOT NULL ORDER BY 1 DESC", kind="table",
           fmt="table", w=12),
     panel("Round-trip time (remote-inbound-rtp)", "SELECT \"time\", stats_id || ' ' || "
           "coalesce(kind, '') AS metric, 1000.0 * round_trip_time AS value FROM "
           "rtc_remote_inbound_rtp_stream_stats WHERE " + WHERE_CONN +
           " AND round_trip_time IS NOT NULL ORDER BY 1", unit="ms", w=8),
     panel("Fraction lost (remote-inbound-rtp)", "SELECT \"time\", stats_id || ' ' || "
           "coalesce(kind, '') AS metric, 100.0 * fraction_lost AS value FROM "
           "rtc_remote_inbound_rtp_stream_stats WHERE " + WHERE_CONN + " ORDER BY 1",
           unit="percent", w=8),
     panel("Candidate pair: current RTT", "SELECT \"time\", stats_id AS metric, "
           "current_rtt_ms AS value FROM rtc_ice_candidate_pair_rates WHERE " + WHERE_CONN +
           " AND current_rtt_ms IS NOT NULL ORDER BY 1", unit="ms", w=8),
     panel("Candidate pair: available outgoing bitrate", "SELECT \"time\", stats_id AS metric, "
           "available_outgoing_bitrate AS value FROM rtc_ice_candidate_pair_rates WHERE " +
           WHERE_CONN + " AND available_outgoing_bitrate IS NOT NULL ORDER BY 1", unit="bps",
           w=8),
     panel("Candidate pairs", "SELECT DISTINCT ON (p.stats_id) p.\"time\", p.stats_id, "
           "p.state, p.nominated, l.candidate_type AS local_type, l.protocol AS local_protocol, "
           "r.candidate_type AS remote_type, r.protocol AS remote_protocol, "
           "1000.0 * p.current_round_trip_time AS rtt_ms FROM rtc_ice_candidate_pair_stats p "
           # candidates are stored when they change (dedup): the latest row at or before
           # the pair's time, not one at that very time
           "LEFT JOIN LATERAL (SELECT x.candidate_type, x.protocol FROM "
           "rtc_ice_candidate_stats x WHERE x.connection_id = p.connection_id AND "
           "x.stats_id = p.local_candidate_id AND x.\"time\" <= p.\"time\" "
           "ORDER BY x.\"time\" DESC LIMIT 1) l ON true "
           "LEFT JOIN LATERAL (SELECT x.candidate_type, x.protocol FROM "
           "rtc_ice_candidate_stats x WHERE x.connection_id = p.connection_id AND "
           "x.stats_id = p.remote_candidate_id AND x.\"time\" <= p.\"time\" "
           "ORDER BY x.\"time\" DESC LIMIT 1) r ON true "
           "WHERE p.connection_id = '$connection_id' AND $__timeFilter(p.\"time\") "
           "ORDER BY p.stats_id, p.\"time\" DESC", kind="table", fmt="table", w=16),
     panel("Transport", "SELECT DISTINCT ON (stats_id) \"time\", stats_id, dtls_state, "
           "ice_state, ice_role, dtls_cipher, srtp_cipher, tls_version, bytes_sent, "
           "bytes_received, selected_candidate_pair_changes FROM rtc_transport_stats WHERE " +
           WHERE_CONN + " ORDER BY stats_id, \"time\" DESC", kind="table", fmt="table", w=24),
     panel("Data channels", "SELECT DISTINCT ON (stats_id) \"time\", stats_id, label, "
           "protocol, state, messages_sent, messages_received, bytes_sent, bytes_received FROM "
           "rtc_data_channel_stats WHERE " + WHERE_CONN + " ORDER BY stats_id, \"time\" DESC",
           kind="table", fmt="table", w=24)],
    links=[{"title": "Overview", "type": "link", "url": "/d/kohaku-overview/kohaku-overview",
            "keepTime": True}],
    annotations=[span_annotation("bad", "red"), span_annotation("warning", "orange")])

# --- Channel ----------------------------------------------------------------------------------

WHERE_CHAN = "channel_id = '$channel' AND $__timeFilter(\"time\")"


def chan_panel(title, view, column, unit, extra=""):
    return panel(title, f"SELECT $__timeGroupAlias(\"time\", $__interval), connection_id AS "
                 f"metric, avg({column}) AS value FROM {view} WHERE {WHERE_CHAN}{extra} "
                 f"GROUP BY 1, 2 ORDER BY 1", unit=unit)


def direction_issues(name, stats_type):
    """The issues of a connection's streams of one direction, spans overlapping the range."""
    return ("  (SELECT string_agg(DISTINCT s.issue, ' ' ORDER BY s.issue) FROM quality_issue_span "
            f"s WHERE s.connection_id = q.connection_id\n   AND s.stats_type = '{stats_type}' AND "
            f"s.{SPAN_IN_RANGE.replace(' AND ', ' AND s.')}) AS {name}_issues,\n")


def severity_timeline(title, column):
    return panel(title, f"SELECT $__timeGroupAlias(\"time\", $__interval), connection_id AS "
                 f"metric, max({column}) AS value FROM quality_connection WHERE {WHERE_CHAN} "
                 "GROUP BY 1, 2 ORDER BY 1", kind="state-timeline", defaults=TIMELINE)


channel = dashboard(
    "kohaku-channel", "Kohaku: channel",
    [ds_var(),
     query_var("channel", "Channel", "SELECT DISTINCT channel_id FROM sora_connection "
               "WHERE " + SEEN + " ORDER BY 1", multi=False)],
    [chan_panel("Inbound bitrate per connection", "rtc_inbound_rtp_rates", "bitrate", "bps"),
     chan_panel("Outbound bitrate per connection", "rtc_outbound_rtp_rates", "bitrate", "bps"),
     chan_panel("Inbound loss per connection", "rtc_inbound_rtp_rates", "loss_percent",
                "percent"),
     chan_panel("Inbound jitter per connection", "rtc_inbound_rtp_rates", "jitter_ms", "ms"),
     chan_panel("Round-trip time per connection", "rtc_ice_candidate_pair_rates",
                "current_rtt_ms", "ms", " AND current_rtt_ms IS NOT NULL"),
     chan_panel("Inbound video frames/s per connection", "rtc_inbound_rtp_rates",
                "frames_per_second", "fps", " AND kind = 'video'"),
     panel("Connections in this channel",
           verdict_list("c.channel_id = '$channel' AND " + SEEN_C),
           kind="table", fmt="table", w=24, overrides=LINKED + VERDICT_CELLS,
           description="Kohaku's verdict on each connection, over all its reports, worst "
                       "first. Click a connection id to open its dashboard."),
     panel("Uplink and downlink per connection",
           "SELECT q.connection_id, c.client_id, c.role, max(q.severity_outbound) AS uplink, "
           "max(q.severity_inbound) AS downlink,\n" + direction_issues("uplink", "outbound-rtp") +
           direction_issues("downlink", "inbound-rtp") + "  " + LIFETIME + "\n"
           "FROM quality_connection q JOIN sora_connection c ON c.connection_id = q.connection_id"
           "\nWHERE q.channel_id = '$channel' AND $__timeFilter(q.\"time\")\n"
           "GROUP BY q.connection_id, c.client_id, c.role, c.first_seen, c.last_seen\n"
           "ORDER BY uplink DESC, downlink DESC, q.connection_id",
           kind="table", fmt="table", w=24, h=7,
           overrides=LINKED + [severity_cells("^(uplink|downlink)$")],
           description="Per participant, over the time range: the worst severity of what it "
                       "sends (uplink: its outbound streams) and of what it receives "
                       "(downlink: its inbound streams), and their issues. A bad uplink on one "
                       "connection and bad downlinks on the others point at that sender."),
     severity_timeline("Uplink severity per connection", "severity_outbound"),
     severity_timeline("Downlink severity per connection", "severity_inbound")],
    links=[{"title": "Overview", "type": "link", "url": "/d/kohaku-overview/kohaku-overview",
            "keepTime": True}])


def render(d):
    return json.dumps(d, indent=2, sort_keys=True) + "\n"


DASHBOARDS = {"overview.json": overview, "connection.json": connection,
              "channel.json": channel}

if __name__ == "__main__":
    for name, d in DASHBOARDS.items():
        with open(os.path.join(HERE, "dashboards", name), "w") as f:
            f.write(render(d))
