/*
 * schema: the declarative description of everything kohaku stores. schema_table.c lists each
 * W3C webrtc-stats dictionary (stats type -> table) with its members and SQL types; from it
 * this module derives column names (snake_case), member lookup, and the DDL of both SQL
 * dialects. Adding a member is one line in schema_table.c (with the schema version that
 * adds it; the migration is derived).
 */
#ifndef KH_SCHEMA_H
#define KH_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

enum kh_coltype { KH_COL_INT = 1, KH_COL_REAL, KH_COL_TEXT, KH_COL_BOOL, KH_COL_JSON, KH_COL_TIME };

/* Which common columns a table has (kh_schema_scope describes them). */
enum kh_scope {
    KH_SCOPE_CONNECTION, /* time, channel_id, connection_id, stats_type, stats_id, stats_timestamp */
    KH_SCOPE_NODE,       /* time, label, node_name */
    KH_SCOPE_NODE_ITEM   /* time, label, node_name, stats_type, stats_index */
};

/* Where a common column's value comes from: the report's envelope or the row. */
enum kh_common_src {
    KH_SRC_TIME,            /* the envelope timestamp (KH_COL_TIME) */
    KH_SRC_CHANNEL_ID,
    KH_SRC_CONNECTION_ID,
    KH_SRC_LABEL,
    KH_SRC_NODE_NAME,
    KH_SRC_STATS_TYPE,
    KH_SRC_STATS_ID,
    KH_SRC_STATS_TIMESTAMP,
    KH_SRC_STATS_INDEX      /* the object's position in the report's "stats" array */
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
    int since; /* schema version that added the column; 0 means 1 */
};

struct kh_stats_table {
    const char *table;
    const char *type;  /* stats "type" value; NULL for the catch-all table */
    const char *type2; /* a second type stored in the same table, or NULL */
    const char *kind;  /* required "kind" value (media-source split), or NULL */
    enum kh_scope scope;
    const struct kh_member *members;
    size_t nmembers;
    int since;
};

extern const struct kh_stats_table kh_stats_tables[];
extern const size_t kh_stats_ntables;
/* Index of rtc_other_stats, erlang_vm_memory_stats and node_other_stats in kh_stats_tables. */
extern const int kh_table_other;
extern const int kh_table_erlang_vm_memory;
extern const int kh_table_node_other;

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
/* Appends a parameterised INSERT that ignores conflicts on the natural key, with one
 * placeholder per column in kh_schema_insert_columns order: common columns, members, extra. */
int kh_schema_insert_sql(enum kh_dialect d, int table, struct kh_buf *out);
/* Number of common columns of the table's scope. */
int kh_schema_ncommon(int table);
/* The common columns of the table's scope. */
const struct kh_scope_desc *kh_schema_scope(int table);

/* camelCase -> snake_case into out (cap bytes). Exposed for tests. */
void kh_schema_snake_case(const char *in, char *out, size_t cap);

#endif
