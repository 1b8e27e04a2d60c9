/*
 * schema: the declarative description of everything kohaku stores. schema_table.c lists each
 * stats table (stats type -> table) as the W3C webrtc-stats dictionaries it is made of, with
 * their members and SQL types, and the envelope tables column by column; from it this module
 * derives column names (snake_case), member lookup, the DDL of both SQL dialects and the
 * envelope tables' statements. Adding a member is one line in schema_table.c (with the
 * schema version that adds it; the migration is derived). The lifecycle tables Sora's session
 * and event webhooks fill (schema version 6) are envelope tables too, whose rows the webhook
 * carries (kh_report.env_rows) instead of one row per report.
 */
#ifndef KH_SCHEMA_H
#define KH_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum kh_coltype {
    KH_COL_INT = 1,
    KH_COL_REAL,
    KH_COL_TEXT,
    KH_COL_BOOL,
    KH_COL_JSON,
    KH_COL_TIME
};

/* Which common columns a table has (kh_schema_scope describes them). */
enum kh_scope {
    KH_SCOPE_CONNECTION, /* time, channel_id, connection_id, stats_type, stats_id,
                            stats_timestamp */
    KH_SCOPE_NODE,       /* time, label, node_name */
    KH_SCOPE_NODE_ITEM   /* time, label, node_name, stats_type, stats_index */
};

/* Where a column's value comes from in a struct kh_report: its envelope, or the row
 * (kh_report_common_value in sora/report.h gives it). The stats tables' common columns use
 * the first group; the envelope tables (kh_env_tables) the envelope's alone. */
enum kh_common_src {
    KH_SRC_TIME,            /* the envelope timestamp (KH_COL_TIME) */
    KH_SRC_CHANNEL_ID,
    KH_SRC_CONNECTION_ID,
    KH_SRC_LABEL,
    KH_SRC_NODE_NAME,
    KH_SRC_STATS_TYPE,
    KH_SRC_STATS_ID,
    KH_SRC_STATS_TIMESTAMP,
    KH_SRC_STATS_INDEX,     /* the object's position in the report's "stats" array */
    /* the envelope alone (no row) */
    KH_SRC_SESSION_ID,
    KH_SRC_CLIENT_ID,
    KH_SRC_BUNDLE_ID,
    KH_SRC_ROLE,
    KH_SRC_VERSION,
    KH_SRC_MULTISTREAM,     /* KH_COL_BOOL, NULL when the envelope has none */
    KH_SRC_SIMULCAST,
    KH_SRC_SPOTLIGHT,
    KH_SRC_REPORT_ID,       /* the envelope's "id" */
    KH_SRC_SOURCE,          /* connection_id of a connection report, node_name of a node's */
    KH_SRC_KIND,            /* "connection" or "node" */
    KH_SRC_STATS_COUNT,     /* the report's rows */
    KH_SRC_BODY_BYTES,      /* the request body's size */
    KH_SRC_RECEIVED_AT,     /* when kohaku finished reading it (KH_COL_TIME) */
    KH_SRC_TYPE,            /* the body's "type" */
    KH_SRC_TIME_HOUR,       /* the envelope timestamp's hour: KH_COL_INT, hours since
                               1970-01-01T00:00Z rounded down */
    /* the report's own rating, from its quality_connection row (NULL without one) */
    KH_SRC_Q_SEVERITY,
    KH_SRC_Q_SEVERITY_OUTBOUND,
    KH_SRC_Q_SEVERITY_INBOUND,
    KH_SRC_Q_MOS_MIN,
    KH_SRC_Q_VIDEO_SCORE_MIN,
    KH_SRC_Q_BROWSER
};

struct kh_common_column {
    const char *name;
    enum kh_coltype type;
    enum kh_common_src src;
    bool not_null;
};

/* The common columns of a scope, in column order (they come before the members), the
 * natural key's columns (NULL-terminated), the column that groups a source's rows
 * (TimescaleDB segmentby: the key's first) and the rest of the key (orderby). */
struct kh_scope_desc {
    const struct kh_common_column *cols;
    size_t ncols;
    const char *const *key;
    size_t nkey;
    const char *segment_by;
    const char *compress_orderby;
};

struct kh_member {
    const char *name; /* the W3C (or browser) member name, camelCase */
    enum kh_coltype type;
    int since;       /* schema version that added the column; 0 means 1 */
    const char *doc; /* a computed table's member: what the value is, for the docs */
};

/* The members a W3C webrtc-stats dictionary adds (its own, not its base dictionaries'), or
 * another group of members (w3c false: those browsers send that the draft does not have,
 * Sora's own). A base dictionary is written once and named by each table that has it. */
struct kh_stats_dict {
    const char *name; /* "RTCRtpStreamStats"; for other groups what they are */
    bool w3c;
    const struct kh_member *members;
    size_t nmembers;
};

struct kh_stats_table {
    const char *table;
    const char *type;  /* stats "type" value; NULL for the catch-all table */
    const char *type2; /* a second type stored in the same table, or NULL */
    const char *kind;  /* required "kind" value (media-source split), or NULL */
    enum kh_scope scope;
    /* Kohaku computes the rows (the quality tables): no stats object maps to it (type is
     * NULL), it has no "extra" column, and about says what a row is. */
    bool computed;
    const char *about;
    /* NULL-terminated: its base dictionaries first, then its own (schema_table.c) */
    const struct kh_stats_dict *const *dicts;
    int since;
    /* Filled by kh_schema_init: the dictionaries' members in column order, which is the
     * order of the database's columns: by the schema version that adds them (a later
     * member's column is added at the end), then in dictionary order. */
    const struct kh_member *members;
    size_t nmembers;
};

/* The declarative table (schema_table.c); kh_schema_init derives kh_stats_tables from it. */
extern const struct kh_stats_table kh_stats_table_defs[];
/* The tables as everyone reads them, members flattened: built by kh_schema_init, read-only
 * afterwards (any thread); NULL before. */
extern const struct kh_stats_table *kh_stats_tables;
extern const size_t kh_stats_ntables;
/* Index of rtc_other_stats, erlang_vm_memory_stats and node_other_stats in kh_stats_tables. */
extern const int kh_table_other;
extern const int kh_table_erlang_vm_memory;
extern const int kh_table_node_other;
/* Index of the quality tables (computed): one row per RTP stream per report, one row per
 * connection report (quality/assess.h writes them). */
extern const int kh_table_quality_stream;
extern const int kh_table_quality_connection;

/* The envelope tables: sora_connection, sora_node and sora_report (one row per connection,
 * per node, per stored report), described as the stats tables are, so that their DDL, both
 * dialects' statements, the backends' binds and the docs are derived, never spelled out. */

/* What an upsert does to a column of a row that is there already (ON CONFLICT DO UPDATE). */
enum kh_merge {
    KH_MERGE_KEEP,     /* the stored value stays (the key; what never changes) */
    KH_MERGE_MIN,      /* the smaller of the two: first_seen keeps the first */
    KH_MERGE_MAX,      /* the larger: last_seen takes the newest */
    KH_MERGE_COALESCE, /* the new value, unless it is NULL */
    KH_MERGE_REPLACE,  /* the new value */
    KH_MERGE_FILL      /* the stored value, unless it is NULL: the first one known */
};
/* MIN and MAX of a column that may be NULL ignore a NULL side, in both dialects. With MIN,
 * MAX and FILL alone a row ends up the same whatever order its webhooks came in, and a
 * webhook delivered twice changes nothing. */

struct kh_env_column {
    const char *name;
    enum kh_coltype type;
    bool not_null;
    enum kh_common_src src; /* where its value comes from in a struct kh_report */
    enum kh_merge merge;    /* upserted tables only */
    const char *doc;        /* where the value comes from, for the docs; NULL: from src */
    int since;              /* the schema version that adds it (0: its table's) */
};

struct kh_env_index {
    const char *suffix;       /* the index is "<table>_<suffix>" */
    const char *const *cols; /* NULL-terminated */
    int since;               /* the schema version that creates it (0: its table's) */
    int dropped;             /* the schema version that drops it (0: never) */
};

/* kh_env_table.kind, besides one enum kh_report_kind: */
enum {
    KH_ENV_STATS = -1,    /* a row for every stats report (connection or node) */
    KH_ENV_WEBHOOKS = -2, /* a row for every session or event webhook */
    KH_ENV_CARRIED = -3   /* the rows a report carries (kh_report.env_rows), any number */
};

struct kh_env_table {
    const char *table;
    const char *about; /* one line for the docs */
    int since;         /* the schema version that creates it */
    int kind;          /* whose rows: an enum kh_report_kind, or KH_ENV_* above */
    /* true: one row per key, merged column by column (enum kh_merge) when it is there; the
     * key is the PRIMARY KEY, one column. false: one row per report, a row whose key is there
     * already is left out (a redelivered report); the key is a unique index "<table>_key". */
    bool upsert;
    const struct kh_env_column *cols;
    size_t ncols;
    const char *const *key; /* NULL-terminated */
    const struct kh_env_index *indexes;
    size_t nindexes;
    /* non-NULL for a time series (on "time"): a TimescaleDB hypertable, compressed with these
     * (the key's first column, the rest of it), and kohaku's retention applies */
    const char *segment_by, *compress_orderby;
};

extern const struct kh_env_table kh_env_tables[];
extern const size_t kh_env_ntables;
/* Index of sora_report in kh_env_tables: whether its row was inserted says whether the report
 * was new (not a redelivery). sora_webhook says the same of a session or event webhook. */
extern const int kh_env_report;
extern const int kh_env_webhook;
/* The lifecycle tables (KH_ENV_CARRIED): one row per Sora session, one per connection. */
extern const int kh_env_session;
extern const int kh_env_lifecycle;

/* Their columns, in table order (schema_table.c places each by these). */
enum kh_session_col {
    KH_SESS_SESSION_ID,
    KH_SESS_CHANNEL_ID,
    KH_SESS_NODE_NAME,
    KH_SESS_CREATED,
    KH_SESS_DESTROYED,
    KH_SESS_END_TYPE,
    KH_SESS_MAX_CONNECTIONS,
    KH_SESS_TOTAL_CONNECTIONS,
    KH_SESS_SPOTLIGHT,
    KH_SESS_FIRST_WEBHOOK,
    KH_SESS_LAST_WEBHOOK,
    KH_SESS_NCOLS
};
enum kh_lifecycle_col {
    KH_LIFE_CONNECTION_ID,
    KH_LIFE_SESSION_ID,
    KH_LIFE_CHANNEL_ID,
    KH_LIFE_CLIENT_ID,
    KH_LIFE_BUNDLE_ID,
    KH_LIFE_ROLE,
    KH_LIFE_CREATED,
    KH_LIFE_DESTROYED,
    KH_LIFE_END_TYPE,
    KH_LIFE_END_REASON,
    KH_LIFE_END_DATA,
    KH_LIFE_MULTISTREAM,
    KH_LIFE_SIMULCAST,
    KH_LIFE_SPOTLIGHT,
    KH_LIFE_AUDIO,
    KH_LIFE_VIDEO,
    KH_LIFE_AUDIO_CODEC_TYPE,
    KH_LIFE_VIDEO_CODEC_TYPE,
    KH_LIFE_VIDEO_BIT_RATE,
    KH_LIFE_MINUTES,
    KH_LIFE_TOTAL_RECEIVED_BYTES,
    KH_LIFE_TOTAL_SENT_BYTES,
    KH_LIFE_TURN_TRANSPORT_TYPE,
    KH_LIFE_FIRST_WEBHOOK,
    KH_LIFE_LAST_WEBHOOK,
    KH_LIFE_NCOLS
};

/* Whether a report of this kind (enum kh_report_kind) has its own row in envelope table t:
 * never for a KH_ENV_CARRIED table, whose rows the report carries. */
bool kh_schema_env_applies(int t, int report_kind);

enum kh_dialect { KH_DIALECT_SQLITE, KH_DIALECT_POSTGRES };

/* Builds the derived lookup data. Call once before anything else here; 0 or KH_ENOMEM. */
int kh_schema_init(void);
void kh_schema_cleanup(void);

/* Table index for a stats object of this type (and kind, for media-source); kh_table_other
 * when the type is unknown. Connection-scoped tables only. */
int kh_schema_table_for(const char *type, size_t type_len, const char *kind, size_t kind_len);
/* True when the table of this type depends on the object's "kind" (media-source). */
bool kh_schema_kind_dependent(const char *type, size_t type_len);
/* Member index in the table, or -1 when the member has no column. */
int kh_schema_member(int table, const char *name, size_t len);
/* snake_case column name of member m of table t. */
const char *kh_schema_column(int table, int member);

/* The newest schema version the code knows. */
int kh_schema_latest_version(void);
/* Appends the SQL statements (each ending in ";\n") that take a database from version-1 to
 * version. 0, or KH_ENOSPC/KH_ENOMEM from the buffer. */
int kh_schema_migration_sql(enum kh_dialect d, int version, struct kh_buf *out);
/* The same statements in two parts, tables (and columns) then views, for a database that has
 * to do something to a version's new tables before views are made on them (Citus). */
int kh_schema_migration_tables_sql(enum kh_dialect d, int version, struct kh_buf *out);
int kh_schema_migration_views_sql(enum kh_dialect d, int version, struct kh_buf *out);
/* Appends a parameterised INSERT that ignores conflicts on the natural key, with one
 * placeholder per column in kh_schema_insert_columns order: common columns, members, extra. */
int kh_schema_insert_sql(enum kh_dialect d, int table, struct kh_buf *out);
/* The statement that writes rows into envelope table t (kh_env_tables), its columns in
 * order: kh_schema_env_rows_sql then kh_schema_env_conflict_sql. SQLite: one row of `?`
 * placeholders, one per column. PostgreSQL: any number of rows as arrays, one
 * $n::type[] per column, read through unnest(...) AS u (so a caller may filter on u's columns
 * between the two parts); for a KH_ENV_CARRIED table the rows of one key are first merged
 * into one (GROUP BY the key, each column as its merge rule says, in the arrays' order: one
 * statement may not update a row twice), and go in key order. The conflict part: an upsert's
 * ON CONFLICT (key) DO UPDATE SET, the merged columns in column order; otherwise nothing in
 * SQLite (the INSERT is OR IGNORE) and ON CONFLICT DO NOTHING in PostgreSQL. 0, or
 * KH_ENOSPC/KH_ENOMEM from the buffer. */
int kh_schema_env_sql(enum kh_dialect d, int t, struct kh_buf *out);
int kh_schema_env_rows_sql(enum kh_dialect d, int t, struct kh_buf *out);
int kh_schema_env_conflict_sql(enum kh_dialect d, int t, struct kh_buf *out);
/* The column type as the DDL of that dialect writes it (the envelope tables' text columns
 * are "text" in both, as the first schema wrote them). */
const char *kh_schema_sqltype(enum kh_dialect d, enum kh_coltype t);
const char *kh_schema_env_sqltype(enum kh_dialect d, enum kh_coltype t);
/* PostgreSQL's name of the type in a cast (int8, float8, bool, text, jsonb, timestamptz). */
const char *kh_schema_pg_cast(enum kh_coltype t);
/* False for a computed table: it has no "extra" column after its members. */
bool kh_schema_has_extra(int table);
/* Number of common columns of the table's scope. */
int kh_schema_ncommon(int table);
/* The common columns of the table's scope. */
const struct kh_scope_desc *kh_schema_scope(int table);

/* The columns reading a connection-scoped stats table back gives a row from: "stats_type",
 * "stats_id", "stats_timestamp" and the members in order, each prefixed with `alias.` when
 * alias is not NULL (kh_schema_row_columns is their count). */
int kh_schema_select_columns(int table, const char *alias, struct kh_buf *out);
int kh_schema_row_columns(int table);
/* An SQL expression giving time expression `expr` (a column of KH_COL_TIME) as microseconds
 * since the epoch, an integer, in both dialects. */
int kh_schema_time_usec_sql(enum kh_dialect d, const char *expr, struct kh_buf *out);

/* camelCase -> snake_case into out (cap bytes). Exposed for tests. */
void kh_schema_snake_case(const char *in, char *out, size_t cap);

#endif
