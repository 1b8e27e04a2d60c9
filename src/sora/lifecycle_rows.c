/*
 * lifecycle_rows: the rows a session or event webhook gives, from what lifecycle.c read
 * (lifecycle_body.h), by the columns of sora_session and sora_connection_lifecycle
 * (schema_table.c). What each column takes from which webhook is in the column reference;
 * how rows of one key merge is the tables' business (MIN, MAX, FILL), so a webhook only says
 * what it knows and leaves the rest NULL.
 *   session webhook:  its session's row; a row per entry of "connections"
 *   event webhook, connection.*: the connection's row, and its session's (ids and webhook
 *                     times only: the session's own times come from the session webhook)
 *   other event webhooks (recording.*, archive.* ...): no rows beyond sora_webhook's
 * Everything goes into the report's arena.
 */
#include <string.h>

#include "core/errors.h"
#include "sora/lifecycle_body.h"
#include "sora/schema.h"

static struct kh_env_row *new_row(struct kh_report *r, int table)
{
    size_t n = kh_env_tables[table].ncols;
    struct kh_env_row *row = kh_arena_alloc(&r->arena, sizeof(*row));
    struct kh_value *vals = kh_arena_alloc(&r->arena, n * sizeof(*vals));
    if (row == NULL || vals == NULL)
        return NULL;
    memset(vals, 0, n * sizeof(*vals));
    *row = (struct kh_env_row){.table = table, .vals = vals};
    return row;
}

static void set_text(struct kh_value *v, const struct kh_str *s)
{
    if (s->p)
        *v = (struct kh_value){.type = KH_COL_TEXT, .len = s->len, .u.s = s->p};
}

static void set_json(struct kh_value *v, const struct kh_str *s)
{
    if (s->p)
        *v = (struct kh_value){.type = KH_COL_JSON, .len = s->len, .u.s = s->p};
}

static void set_time(struct kh_value *v, const struct kh_lc_time *t)
{
    if (t->set)
        *v = (struct kh_value){.type = KH_COL_TIME, .len = KH_TIME_TEXT_LEN, .u.s = t->text};
}

static void set_flag(struct kh_value *v, int8_t f)
{
    if (f >= 0)
        *v = (struct kh_value){.type = KH_COL_BOOL, .u.b = f > 0};
}

static void set_int(struct kh_value *v, const struct kh_lc_int *i)
{
    if (i->set)
        *v = (struct kh_value){.type = KH_COL_INT, .u.i = i->v};
}

/* The top level's value, else data's. */
static const struct kh_str *str_of(const struct kh_str *top, const struct kh_str *data)
{
    return top->p ? top : data;
}

static const struct kh_lc_time *time_of(const struct kh_lc_time *top,
                                        const struct kh_lc_time *data)
{
    return top->set ? top : data;
}

static const struct kh_lc_int *int_of(const struct kh_lc_int *top, const struct kh_lc_int *data)
{
    return top->set ? top : data;
}

static bool is_type(const struct kh_str *type, const char *name)
{
    return type->len == strlen(name) && memcmp(type->p, name, type->len) == 0;
}

static bool starts_with(const struct kh_str *s, const char *prefix)
{
    size_t n = strlen(prefix);
    return s->len >= n && memcmp(s->p, prefix, n) == 0;
}

/* The session's row: its ids and the webhook's time, and what the session webhook says. */
static int session_row(struct kh_report *r, const struct kh_lc_fields *f, bool session_webhook)
{
    struct kh_env_row *row = new_row(r, kh_env_session);
    if (row == NULL)
        return KH_ENOMEM;
    struct kh_value *v = row->vals;
    set_text(&v[KH_SESS_SESSION_ID], &f->session_id);
    set_text(&v[KH_SESS_CHANNEL_ID], &f->channel_id);
    set_text(&v[KH_SESS_NODE_NAME], &f->node_name);
    set_time(&v[KH_SESS_FIRST_WEBHOOK], &f->timestamp);
    set_time(&v[KH_SESS_LAST_WEBHOOK], &f->timestamp);
    if (session_webhook) {
        bool ended =
            is_type(&f->type, "session.destroyed") || is_type(&f->type, "session.vanished");
        set_time(&v[KH_SESS_CREATED], &f->created);
        set_time(&v[KH_SESS_DESTROYED],
                 ended && !f->destroyed.set ? &f->timestamp : &f->destroyed);
        if (ended)
            set_text(&v[KH_SESS_END_TYPE], &f->type);
        set_int(&v[KH_SESS_MAX_CONNECTIONS], &f->max_connections);
        set_int(&v[KH_SESS_TOTAL_CONNECTIONS], &f->total_connections);
        set_flag(&v[KH_SESS_SPOTLIGHT], f->spotlight);
    }
    kh_report_add_env_row(r, row);
    return 0;
}

/* An entry of a session webhook's "connections". */
static int entry_row(struct kh_report *r, const struct kh_lc_fields *f,
                     const struct kh_lc_conn *c)
{
    struct kh_env_row *row = new_row(r, kh_env_lifecycle);
    if (row == NULL)
        return KH_ENOMEM;
    struct kh_value *v = row->vals;
    set_text(&v[KH_LIFE_CONNECTION_ID], &c->connection_id);
    set_text(&v[KH_LIFE_SESSION_ID], &f->session_id);
    set_text(&v[KH_LIFE_CHANNEL_ID], &f->channel_id);
    set_text(&v[KH_LIFE_CLIENT_ID], &c->client_id);
    set_text(&v[KH_LIFE_BUNDLE_ID], &c->bundle_id);
    set_text(&v[KH_LIFE_ROLE], &c->role);
    set_time(&v[KH_LIFE_CREATED], &c->created);
    set_time(&v[KH_LIFE_DESTROYED], &c->destroyed);
    set_flag(&v[KH_LIFE_SIMULCAST], c->simulcast);
    set_flag(&v[KH_LIFE_SPOTLIGHT], c->spotlight);
    set_flag(&v[KH_LIFE_AUDIO], c->audio);
    set_flag(&v[KH_LIFE_VIDEO], c->video);
    set_text(&v[KH_LIFE_AUDIO_CODEC_TYPE], &c->audio_codec_type);
    set_text(&v[KH_LIFE_VIDEO_CODEC_TYPE], &c->video_codec_type);
    set_int(&v[KH_LIFE_VIDEO_BIT_RATE], &c->video_bit_rate);
    set_time(&v[KH_LIFE_FIRST_WEBHOOK], &f->timestamp);
    set_time(&v[KH_LIFE_LAST_WEBHOOK], &f->timestamp);
    kh_report_add_env_row(r, row);
    return 0;
}

/* When and how the connection ended, from connection.destroyed or connection.failed. */
static void ending(struct kh_value *v, const struct kh_lc_body *b)
{
    const struct kh_lc_fields *f = &b->top, *d = &b->data;
    const struct kh_lc_time *destroyed = time_of(&f->destroyed, &d->destroyed);
    set_time(&v[KH_LIFE_DESTROYED], destroyed->set ? destroyed : &f->timestamp);
    set_text(&v[KH_LIFE_END_TYPE], &f->type);
    set_text(&v[KH_LIFE_END_REASON], str_of(&f->reason, &d->reason));
    set_json(&v[KH_LIFE_END_DATA], &b->data_json);
}

/* The connection's row from an event webhook about it (connection.*). */
static int connection_row(struct kh_report *r, const struct kh_lc_body *b)
{
    const struct kh_lc_fields *f = &b->top, *d = &b->data;
    struct kh_env_row *row = new_row(r, kh_env_lifecycle);
    if (row == NULL)
        return KH_ENOMEM;
    struct kh_value *v = row->vals;
    set_text(&v[KH_LIFE_CONNECTION_ID], &f->connection_id);
    set_text(&v[KH_LIFE_SESSION_ID], &f->session_id);
    set_text(&v[KH_LIFE_CHANNEL_ID], &f->channel_id);
    set_text(&v[KH_LIFE_CLIENT_ID], &f->client_id);
    set_text(&v[KH_LIFE_BUNDLE_ID], &f->bundle_id);
    set_text(&v[KH_LIFE_ROLE], &f->role);
    const struct kh_lc_time *created = time_of(&f->created, &d->created);
    bool is_created = is_type(&f->type, "connection.created");
    set_time(&v[KH_LIFE_CREATED], is_created && !created->set ? &f->timestamp : created);
    if (is_type(&f->type, "connection.destroyed") || is_type(&f->type, "connection.failed"))
        ending(v, b);
    set_flag(&v[KH_LIFE_MULTISTREAM], f->multistream >= 0 ? f->multistream : d->multistream);
    set_flag(&v[KH_LIFE_SIMULCAST], f->simulcast >= 0 ? f->simulcast : d->simulcast);
    set_flag(&v[KH_LIFE_SPOTLIGHT], f->spotlight >= 0 ? f->spotlight : d->spotlight);
    set_flag(&v[KH_LIFE_AUDIO], f->audio >= 0 ? f->audio : d->audio);
    set_flag(&v[KH_LIFE_VIDEO], f->video >= 0 ? f->video : d->video);
    set_int(&v[KH_LIFE_MINUTES], int_of(&f->minutes, &d->minutes));
    set_int(&v[KH_LIFE_TOTAL_RECEIVED_BYTES],
            int_of(&f->total_received_bytes, &d->total_received_bytes));
    set_int(&v[KH_LIFE_TOTAL_SENT_BYTES], int_of(&f->total_sent_bytes, &d->total_sent_bytes));
    set_text(&v[KH_LIFE_TURN_TRANSPORT_TYPE],
             str_of(&f->turn_transport_type, &d->turn_transport_type));
    set_time(&v[KH_LIFE_FIRST_WEBHOOK], &f->timestamp);
    set_time(&v[KH_LIFE_LAST_WEBHOOK], &f->timestamp);
    kh_report_add_env_row(r, row);
    return 0;
}

int kh_lifecycle_rows(struct kh_report *r, const struct kh_lc_body *b)
{
    const struct kh_lc_fields *f = &b->top;
    if (r->kind == KH_REPORT_SESSION_WEBHOOK) {
        int rc = session_row(r, f, true);
        for (size_t i = 0; rc == 0 && i < b->nconns; i++)
            rc = entry_row(r, f, &b->conns[i]);
        return rc;
    }
    if (!starts_with(&f->type, "connection."))
        return 0;
    int rc = session_row(r, f, false);
    return rc ? rc : connection_row(r, b);
}
