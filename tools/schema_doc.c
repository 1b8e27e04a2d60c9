/*
 * kohaku-schema-doc: README.md's column reference, made from the schema's declarative tables
 * (src/sora/schema_table.c) so that it cannot drift from what kohaku creates: every table,
 * its columns in database order with their SQLite and PostgreSQL types, and where each
 * value comes from (the W3C dictionary member, the report's envelope, the stats object).
 *
 *   kohaku-schema-doc               prints the reference (markdown)
 *   kohaku-schema-doc --update FILE  replaces what is between FILE's two markers with it
 *
 * It only reads the schema; it writes nothing but stdout or FILE.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "sora/schema.h"

#define BEGIN_MARK "<!-- BEGIN column reference (kohaku-schema-doc --update README.md) -->\n"
#define END_MARK "<!-- END column reference -->\n"

/* Where a value of the envelope or of a stats object comes from, in words. */
static const char *source_text(enum kh_common_src src)
{
    switch (src) {
    case KH_SRC_TIME: return "the report's `timestamp`";
    case KH_SRC_CHANNEL_ID: return "the report's `channel_id`";
    case KH_SRC_CONNECTION_ID: return "the report's `connection_id`";
    case KH_SRC_LABEL: return "the report's `label`";
    case KH_SRC_NODE_NAME: return "the report's `node_name`";
    case KH_SRC_STATS_TYPE: return "the object's `type`";
    case KH_SRC_STATS_ID: return "the object's `id`";
    case KH_SRC_STATS_TIMESTAMP: return "the object's `timestamp` (the client's ms)";
    case KH_SRC_STATS_INDEX: return "the item's position in `stats`";
    case KH_SRC_SESSION_ID: return "the report's `session_id`";
    case KH_SRC_CLIENT_ID: return "the report's `client_id`";
    case KH_SRC_BUNDLE_ID: return "the report's `bundle_id`";
    case KH_SRC_ROLE: return "the report's `role`";
    case KH_SRC_VERSION: return "the report's `version`";
    case KH_SRC_MULTISTREAM: return "the report's `multistream`";
    case KH_SRC_SIMULCAST: return "the report's `simulcast`";
    case KH_SRC_SPOTLIGHT: return "the report's `spotlight`";
    case KH_SRC_REPORT_ID: return "the report's `id`";
    case KH_SRC_SOURCE: return "`connection_id`, or `node_name` for a node report";
    case KH_SRC_KIND: return "`connection` or `node`";
    case KH_SRC_STATS_COUNT: return "the rows the report gave";
    case KH_SRC_BODY_BYTES: return "the request body's size in bytes";
    case KH_SRC_RECEIVED_AT: return "when kohaku had read the report";
    case KH_SRC_TYPE: return "the report's `type`";
    case KH_SRC_TIME_HOUR: return "the report's `timestamp`'s hour";
    case KH_SRC_Q_SEVERITY:
    case KH_SRC_Q_SEVERITY_OUTBOUND:
    case KH_SRC_Q_SEVERITY_INBOUND:
    case KH_SRC_Q_MOS_MIN:
    case KH_SRC_Q_VIDEO_SCORE_MIN:
    case KH_SRC_Q_BROWSER: return "the report's `quality_connection` row";
    }
    return "";
}

/* How an upsert merges a column, in words: a time's smallest is its earliest; a column that
 * may be NULL keeps the one side known. */
static const char *merge_text(const struct kh_env_column *c)
{
    bool time = c->type == KH_COL_TIME;
    switch (c->merge) {
    case KH_MERGE_KEEP: return "kept";
    case KH_MERGE_MIN:
        if (c->not_null)
            return time ? "the earliest" : "the smallest";
        return time ? "the earliest known" : "the smallest known";
    case KH_MERGE_MAX:
        if (c->not_null)
            return time ? "the latest" : "the largest";
        return time ? "the latest known" : "the largest known";
    case KH_MERGE_COALESCE: return "the new one, unless it is NULL";
    case KH_MERGE_REPLACE: return "the new one";
    case KH_MERGE_FILL: return "the first one known";
    }
    return "";
}

static int put_names(struct kh_buf *b, const char *const *names)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && names[i]; i++)
        rc = kh_buf_printf(b, "%s`%s`", i ? ", " : "", names[i]);
    return rc;
}

/* "TEXT NOT NULL | timestamptz NOT NULL": a column's type in both dialects. */
static int put_types(struct kh_buf *b, const char *sqlite, const char *pg, const char *cons)
{
    return kh_buf_printf(b, " | %s%s | %s%s |", sqlite, cons, pg, cons);
}

static int env_head(struct kh_buf *b, const struct kh_env_table *et)
{
    int rc = kh_buf_printf(b, "#### `%s`\n\n%s", et->table, et->about);
    if (rc == 0 && et->since > 1)
        rc = kh_buf_printf(b, " (schema version %d)", et->since);
    if (rc == 0)
        rc = kh_buf_printf(b, ". %s key: ", et->upsert ? "Primary" : "Unique");
    if (rc == 0)
        rc = put_names(b, et->key);
    for (size_t i = 0, k = 0; rc == 0 && i < et->nindexes; i++) {
        if (et->indexes[i].dropped)
            continue;
        rc = kh_buf_printf(b, "%s(", k++ ? ", " : "; indexed on ");
        rc = rc ? rc : put_names(b, et->indexes[i].cols);
        rc = rc ? rc : kh_buf_printf(b, ")");
    }
    if (rc == 0)
        rc = kh_buf_printf(b, "%s.\n\n| column | SQLite | PostgreSQL | from |%s\n"
                              "|---|---|---|---|%s\n",
                           et->upsert ? "; a row that is there already is updated column by "
                                        "column as \"on conflict\" says"
                           : et->kind == KH_ENV_WEBHOOKS
                               ? " (a webhook stored already is not stored again)"
                               : " (a report stored already is not stored again)",
                           et->upsert ? " on conflict |" : "", et->upsert ? "---|" : "");
    return rc;
}

static int env_table(struct kh_buf *b, const struct kh_env_table *et)
{
    int rc = env_head(b, et);
    for (size_t c = 0; rc == 0 && c < et->ncols; c++) {
        const struct kh_env_column *col = &et->cols[c];
        bool primary = et->upsert && strcmp(col->name, et->key[0]) == 0;
        rc = kh_buf_printf(b, "| `%s`", col->name);
        if (rc == 0)
            rc = put_types(b, kh_schema_env_sqltype(KH_DIALECT_SQLITE, col->type),
                           kh_schema_env_sqltype(KH_DIALECT_POSTGRES, col->type),
                           primary ? " PRIMARY KEY" : col->not_null ? " NOT NULL" : "");
        if (rc == 0)
            rc = kh_buf_printf(b, " %s |", col->doc ? col->doc : source_text(col->src));
        if (rc == 0 && et->upsert)
            rc = kh_buf_printf(b, " %s |", primary ? "(the key)" : merge_text(col));
        if (rc == 0)
            rc = kh_buf_printf(b, "\n");
    }
    return rc ? rc : kh_buf_printf(b, "\n");
}

/* What rows a stats table holds. */
static int stats_about(struct kh_buf *b, const struct kh_stats_table *st)
{
    if (st->computed)
        return kh_buf_printf(b, "%s", st->about);
    const char *what = st->scope == KH_SCOPE_CONNECTION ? "Stats objects"
                                                        : "Items of `node.erlang-vm` reports";
    if (st->type == NULL)
        return kh_buf_printf(b, "%s of any other type, all their members in `extra`", what);
    bool conn = st->scope == KH_SCOPE_CONNECTION;
    int rc = kh_buf_printf(b, "%s `%s`", conn ? "Stats objects of type" : "Items of type",
                           st->type);
    if (rc == 0 && st->type2)
        rc = kh_buf_printf(b, " and `%s`", st->type2);
    if (rc == 0 && st->kind)
        rc = kh_buf_printf(b, " with `kind` `%s`", st->kind);
    return rc || conn ? rc : kh_buf_printf(b, " of `node.erlang-vm` reports");
}

/* The dictionary a member of the table comes from (member names are unique in a table). */
static const struct kh_stats_dict *dict_of(const struct kh_stats_table *st, const char *name)
{
    for (const struct kh_stats_dict *const *d = st->dicts; *d; d++)
        for (size_t i = 0; i < (*d)->nmembers; i++)
            if (strcmp((*d)->members[i].name, name) == 0)
                return *d;
    return NULL;
}

static int stats_member(struct kh_buf *b, int t, int m)
{
    const struct kh_member *mb = &kh_stats_tables[t].members[m];
    const struct kh_stats_dict *d = dict_of(&kh_stats_tables[t], mb->name);
    int rc = kh_buf_printf(b, "| `%s`", kh_schema_column(t, m));
    if (rc == 0)
        rc = put_types(b, kh_schema_sqltype(KH_DIALECT_SQLITE, mb->type),
                       kh_schema_sqltype(KH_DIALECT_POSTGRES, mb->type), "");
    if (rc == 0 && mb->doc)
        rc = kh_buf_printf(b, " %s", mb->doc);
    else if (rc == 0 && d->w3c)
        rc = kh_buf_printf(b, " `%s.%s`", d->name, mb->name);
    else if (rc == 0)
        rc = kh_buf_printf(b, " `%s` (%s)", mb->name, d->name);
    if (rc == 0 && mb->since > 1)
        rc = kh_buf_printf(b, ", schema version %d", mb->since);
    return rc ? rc : kh_buf_printf(b, " |\n");
}

static int stats_table(struct kh_buf *b, int t)
{
    const struct kh_stats_table *st = &kh_stats_tables[t];
    const struct kh_scope_desc *sc = kh_schema_scope(t);
    int rc = kh_buf_printf(b, "#### `%s`\n\n", st->table);
    if (rc == 0)
        rc = stats_about(b, st);
    if (rc == 0 && st->since > 1)
        rc = kh_buf_printf(b, " (schema version %d)", st->since);
    if (rc == 0)
        rc = kh_buf_printf(b, ". Unique key: ");
    if (rc == 0)
        rc = put_names(b, sc->key);
    if (rc == 0)
        rc = kh_buf_printf(b, ".\n\n| column | SQLite | PostgreSQL | from |\n|---|---|---|---|\n");
    for (size_t c = 0; rc == 0 && c < sc->ncols; c++) {
        rc = kh_buf_printf(b, "| `%s`", sc->cols[c].name);
        if (rc == 0)
            rc = put_types(b, kh_schema_sqltype(KH_DIALECT_SQLITE, sc->cols[c].type),
                           kh_schema_sqltype(KH_DIALECT_POSTGRES, sc->cols[c].type),
                           sc->cols[c].not_null ? " NOT NULL" : "");
        if (rc == 0)
            rc = kh_buf_printf(b, " %s |\n", source_text(sc->cols[c].src));
    }
    for (size_t m = 0; rc == 0 && m < st->nmembers; m++)
        rc = stats_member(b, t, (int)m);
    if (rc == 0 && !kh_schema_has_extra(t))
        return kh_buf_printf(b, "\n");
    if (rc == 0)
        rc = kh_buf_printf(b, "| `extra`");
    if (rc == 0)
        rc = put_types(b, kh_schema_sqltype(KH_DIALECT_SQLITE, KH_COL_JSON),
                       kh_schema_sqltype(KH_DIALECT_POSTGRES, KH_COL_JSON), "");
    return rc ? rc : kh_buf_printf(b, " the members without a column, as a JSON object |\n\n");
}

static int reference(struct kh_buf *b)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < kh_env_ntables; t++)
        rc = env_table(b, &kh_env_tables[t]);
    for (size_t t = 0; rc == 0 && t < kh_stats_ntables; t++)
        rc = stats_table(b, (int)t);
    if (rc == 0 && b->len > 0)
        b->len--; /* one blank line too many before the end marker */
    return rc;
}

static int read_file(const char *path, struct kh_buf *b)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return -1;
    char chunk[65536];
    size_t got;
    int rc = 0;
    while (rc == 0 && (got = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        rc = kh_buf_append(b, chunk, got);
    fclose(fp);
    return rc ? rc : kh_buf_append(b, "", 1);
}

/* Replaces what is between the markers in path with ref. */
static int update(const char *path, const struct kh_buf *ref)
{
    struct kh_buf old;
    kh_buf_init(&old, 16u << 20);
    if (read_file(path, &old) != 0) {
        fprintf(stderr, "kohaku-schema-doc: cannot read %s\n", path);
        return 1;
    }
    char *begin = strstr(old.data, BEGIN_MARK);
    char *end = begin ? strstr(begin, END_MARK) : NULL;
    if (end == NULL) {
        fprintf(stderr, "kohaku-schema-doc: %s has no markers %s and %s", path, BEGIN_MARK,
                END_MARK);
        return 1;
    }
    begin += strlen(BEGIN_MARK);
    FILE *fp = fopen(path, "wb");
    int bad = fp == NULL || fwrite(old.data, 1, (size_t)(begin - old.data), fp) == 0 ||
              fwrite(ref->data, 1, ref->len, fp) != ref->len || fputs(end, fp) == EOF;
    if (fp && fclose(fp) != 0)
        bad = 1;
    kh_buf_cleanup(&old);
    if (bad)
        fprintf(stderr, "kohaku-schema-doc: cannot write %s\n", path);
    return bad;
}

int main(int argc, char **argv)
{
    bool to_file = argc == 3 && strcmp(argv[1], "--update") == 0;
    if (argc != 1 && !to_file) {
        fprintf(stderr, "usage: kohaku-schema-doc [--update README.md]\n");
        return 2;
    }
    struct kh_buf ref;
    kh_buf_init(&ref, 16u << 20);
    if (kh_schema_init() != 0 || reference(&ref) != 0) {
        fprintf(stderr, "kohaku-schema-doc: out of memory\n");
        return 1;
    }
    int rc = to_file ? update(argv[2], &ref) : fwrite(ref.data, 1, ref.len, stdout) != ref.len;
    kh_buf_cleanup(&ref);
    kh_schema_cleanup();
    return rc;
}
