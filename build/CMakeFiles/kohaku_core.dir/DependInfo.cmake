
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/main/src/api/collector.c" "CMakeFiles/kohaku_core.dir/src/api/collector.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/api/collector.c.o.d"
  "/work/main/src/api/health.c" "CMakeFiles/kohaku_core.dir/src/api/health.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/api/health.c.o.d"
  "/work/main/src/core/arena.c" "CMakeFiles/kohaku_core.dir/src/core/arena.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/arena.c.o.d"
  "/work/main/src/core/buf.c" "CMakeFiles/kohaku_core.dir/src/core/buf.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/buf.c.o.d"
  "/work/main/src/core/config.c" "CMakeFiles/kohaku_core.dir/src/core/config.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/config.c.o.d"
  "/work/main/src/core/jsonw.c" "CMakeFiles/kohaku_core.dir/src/core/jsonw.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/jsonw.c.o.d"
  "/work/main/src/core/log.c" "CMakeFiles/kohaku_core.dir/src/core/log.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/log.c.o.d"
  "/work/main/src/core/timeutil.c" "CMakeFiles/kohaku_core.dir/src/core/timeutil.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/core/timeutil.c.o.d"
  "/work/main/src/http/h1.c" "CMakeFiles/kohaku_core.dir/src/http/h1.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/http/h1.c.o.d"
  "/work/main/src/http/h2.c" "CMakeFiles/kohaku_core.dir/src/http/h2.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/http/h2.c.o.d"
  "/work/main/src/http/request.c" "CMakeFiles/kohaku_core.dir/src/http/request.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/http/request.c.o.d"
  "/work/main/src/http/router.c" "CMakeFiles/kohaku_core.dir/src/http/router.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/http/router.c.o.d"
  "/work/main/src/net/server.c" "CMakeFiles/kohaku_core.dir/src/net/server.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/net/server.c.o.d"
  "/work/main/src/pipeline/batcher.c" "CMakeFiles/kohaku_core.dir/src/pipeline/batcher.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/pipeline/batcher.c.o.d"
  "/work/main/src/sora/envelope.c" "CMakeFiles/kohaku_core.dir/src/sora/envelope.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/sora/envelope.c.o.d"
  "/work/main/src/sora/report.c" "CMakeFiles/kohaku_core.dir/src/sora/report.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/sora/report.c.o.d"
  "/work/main/src/sora/schema.c" "CMakeFiles/kohaku_core.dir/src/sora/schema.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/sora/schema.c.o.d"
  "/work/main/src/sora/schema_table.c" "CMakeFiles/kohaku_core.dir/src/sora/schema_table.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/sora/schema_table.c.o.d"
  "/work/main/src/store/null.c" "CMakeFiles/kohaku_core.dir/src/store/null.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/store/null.c.o.d"
  "/work/main/src/store/pg_encode.c" "CMakeFiles/kohaku_core.dir/src/store/pg_encode.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/store/pg_encode.c.o.d"
  "/work/main/src/store/postgres.c" "CMakeFiles/kohaku_core.dir/src/store/postgres.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/store/postgres.c.o.d"
  "/work/main/src/store/sqlite.c" "CMakeFiles/kohaku_core.dir/src/store/sqlite.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/store/sqlite.c.o.d"
  "/work/main/src/store/store.c" "CMakeFiles/kohaku_core.dir/src/store/store.c.o" "gcc" "CMakeFiles/kohaku_core.dir/src/store/store.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
