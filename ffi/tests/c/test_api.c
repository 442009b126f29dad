/* Exercises every function of govshare.h, misuse included, and several threads querying one
 * engine. Run by ffi/tests/c_api.rs (under valgrind when it is installed):
 *
 *   test_api STORE CASES CSV SCRATCH
 *
 * STORE   a store prepared by the Rust test (principals and grants of the security cases)
 * CASES   lines "user|purpose|sql"; for each, the outcome is printed for the Rust test to
 *         compare with what the Rust API returns for the same principal and query
 * CSV     a person CSV to load into a fresh store under SCRATCH (administrative calls)
 *
 * Output: "CASE i STATUS" lines followed by "MSG ..." or tab-separated rows, then "OK section"
 * lines. Any broken expectation prints "FAIL ..." and exits with 1.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "govshare.h"

#define CHECK(cond, ...)                                                  \
  do {                                                                    \
    if (!(cond)) {                                                        \
      printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
      printf(__VA_ARGS__);                                                \
      printf("\n");                                                       \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

#define CHECK_STATUS(call, want, handle_msg)                                         \
  do {                                                                               \
    gs_status got_ = (call);                                                         \
    CHECK(got_ == (want), "%s returned %s (%s), expected %s", #call,                 \
          gs_status_name(got_), (handle_msg), gs_status_name(want));                 \
  } while (0)

/* ---- reading Arrow C streams (strings and integers are enough for the cases) ---- */

static int is_null(const struct ArrowArray *col, int64_t i) {
  const uint8_t *validity = (const uint8_t *)col->buffers[0];
  int64_t j = col->offset + i;
  return validity != NULL && !(validity[j / 8] & (1 << (j % 8)));
}

static void print_cell(FILE *out, const struct ArrowSchema *type, const struct ArrowArray *col,
                       int64_t i) {
  int64_t j = col->offset + i;
  if (is_null(col, i)) {
    fputs("NULL", out);
  } else if (strcmp(type->format, "u") == 0) {
    const int32_t *off = (const int32_t *)col->buffers[1];
    fwrite((const char *)col->buffers[2] + off[j], 1, (size_t)(off[j + 1] - off[j]), out);
  } else if (strcmp(type->format, "U") == 0) {
    const int64_t *off = (const int64_t *)col->buffers[1];
    fwrite((const char *)col->buffers[2] + off[j], 1, (size_t)(off[j + 1] - off[j]), out);
  } else if (strcmp(type->format, "vu") == 0) {
    const uint8_t *view = (const uint8_t *)col->buffers[1] + 16 * j;
    int32_t len, buf, voff;
    memcpy(&len, view, 4);
    if (len <= 12) {
      fwrite(view + 4, 1, (size_t)len, out);
    } else {
      memcpy(&buf, view + 8, 4);
      memcpy(&voff, view + 12, 4);
      fwrite((const char *)col->buffers[2 + buf] + voff, 1, (size_t)len, out);
    }
  } else if (strcmp(type->format, "b") == 0) {
    const uint8_t *bits = (const uint8_t *)col->buffers[1];
    fputs(bits[j / 8] & (1 << (j % 8)) ? "true" : "false", out);
  } else if (strcmp(type->format, "l") == 0) {
    fprintf(out, "%" PRId64, ((const int64_t *)col->buffers[1])[j]);
  } else if (strcmp(type->format, "i") == 0) {
    fprintf(out, "%" PRId32, ((const int32_t *)col->buffers[1])[j]);
  } else {
    fprintf(out, "<%s>", type->format);
  }
}

/* Drain a stream, printing rows to `out` (may be NULL); returns the row count or -1. */
/* A second-factor login of `user` for `purpose` (the cases read the citizen ID, a sensitive
   item, in clear). */
static gs_status open_strong(gs_engine *engine, const char *user, const char *purpose,
                             gs_session **out) {
  char login[256];
  snprintf(login, sizeof login,
           "{\"user\":\"%s\",\"purpose\":\"%s\",\"auth\":\"second_factor\"}", user, purpose);
  return gs_session_open_as(engine, login, out);
}

static int64_t drain(struct ArrowArrayStream *stream, FILE *out) {
  struct ArrowSchema schema;
  int64_t rows = 0;
  if (stream->get_schema(stream, &schema) != 0) {
    printf("FAIL get_schema: %s\n", stream->get_last_error(stream));
    stream->release(stream);
    return -1;
  }
  for (;;) {
    struct ArrowArray batch;
    if (stream->get_next(stream, &batch) != 0) {
      printf("FAIL get_next: %s\n", stream->get_last_error(stream));
      rows = -1;
      break;
    }
    if (batch.release == NULL) break;
    for (int64_t r = 0; r < batch.length && out; r++) {
      for (int64_t c = 0; c < batch.n_children; c++) {
        if (c) fputc('\t', out);
        print_cell(out, schema.children[c], batch.children[c], r);
      }
      fputc('\n', out);
    }
    rows += batch.length;
    batch.release(&batch);
  }
  schema.release(&schema);
  stream->release(stream);
  return rows;
}

/* ---- the security cases, compared with Rust by the caller ---- */

static void run_cases(gs_engine *engine, const char *path) {
  FILE *f = fopen(path, "r");
  CHECK(f != NULL, "cannot open %s", path);
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\n")] = 0;
    if (line[0] == 0 || line[0] == '#') continue;
    char *user = strtok(line, "|");
    char *purpose = strtok(NULL, "|");
    char *sql = strtok(NULL, "");
    CHECK(user && purpose && sql, "malformed case line %d", n);
    gs_session *s = NULL;
    gs_status st = open_strong(engine, user, purpose, &s);
    if (st == GS_OK) {
      struct ArrowArrayStream stream;
      st = gs_session_query(s, sql, &stream);
      printf("CASE %d %s\n", n, gs_status_name(st));
      if (st == GS_OK) {
        CHECK(drain(&stream, stdout) >= 0, "case %d failed while streaming", n);
      } else {
        printf("MSG %s\n", gs_session_errmsg(s));
      }
    } else {
      printf("CASE %d %s\nMSG %s\n", n, gs_status_name(st), gs_engine_errmsg(engine));
    }
    CHECK_STATUS(gs_session_close(s), GS_OK, "close");
    n++;
  }
  fclose(f);
  printf("OK cases %d\n", n);
}

/* ---- misuse: every kind of wrong call gets a code and a message ---- */

static void misuse(gs_engine *engine) {
  gs_engine *e = (gs_engine *)0x1;
  CHECK_STATUS(gs_engine_open(NULL, &e), GS_INVALID_ARGUMENT, gs_last_error());
  CHECK(e == NULL, "out_engine must be NULL after a failure");
  CHECK(strstr(gs_last_error(), "path is NULL") != NULL, "%s", gs_last_error());
  CHECK_STATUS(gs_engine_open("/nonexistent/govshare-store", NULL), GS_INVALID_ARGUMENT,
               gs_last_error());
  CHECK_STATUS(gs_engine_open("/nonexistent/govshare-store", &e), GS_NOT_FOUND, gs_last_error());
  CHECK(strlen(gs_last_error()) > 0, "a failure leaves a message");
  const char bad_utf8[] = {'/', (char)0xff, (char)0xfe, 0};
  CHECK_STATUS(gs_engine_open(bad_utf8, &e), GS_INVALID_ARGUMENT, gs_last_error());
  CHECK(strstr(gs_last_error(), "UTF-8") != NULL, "%s", gs_last_error());

  /* NULL handles and destructors. */
  gs_session *s = NULL;
  CHECK_STATUS(gs_session_open(NULL, "u", "p", &s), GS_INVALID_HANDLE, gs_last_error());
  CHECK_STATUS(gs_engine_close(NULL), GS_OK, "");
  CHECK_STATUS(gs_session_close(NULL), GS_OK, "");
  gs_string_free(NULL);
  CHECK(gs_engine_errmsg(NULL) != NULL && gs_session_errmsg(NULL) != NULL, "never NULL");
  struct ArrowArrayStream stream;
  CHECK_STATUS(gs_session_query(NULL, "SELECT 1", &stream), GS_INVALID_HANDLE, gs_last_error());

  /* Wrong arguments on a live handle: the message is on the handle too. */
  CHECK_STATUS(gs_session_open(engine, NULL, "p", &s), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(engine));
  CHECK(strstr(gs_engine_errmsg(engine), "user is NULL") != NULL, "%s", gs_engine_errmsg(engine));
  CHECK_STATUS(gs_session_open(engine, "nobody", "P", &s), GS_ACCESS_DENIED,
               gs_engine_errmsg(engine));
  CHECK(s == NULL, "out_session must be NULL after a failure");
  CHECK_STATUS(gs_session_open(engine, "alice", "FULL", &s), GS_OK, gs_engine_errmsg(engine));
  CHECK(strcmp(gs_engine_errmsg(engine), "") == 0, "a success clears this thread's message");
  CHECK_STATUS(gs_session_query(s, NULL, &stream), GS_INVALID_ARGUMENT, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query(s, "SELECT 1", NULL), GS_INVALID_ARGUMENT, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query(s, "SELEC nonsense", &stream), GS_INVALID_INPUT,
               gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query(s, "DROP TABLE person", &stream), GS_ACCESS_DENIED,
               gs_session_errmsg(s));
  char *json = (char *)0x1;
  CHECK_STATUS(gs_session_catalog(s, NULL), GS_INVALID_ARGUMENT, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_catalog(s, &json), GS_OK, gs_session_errmsg(s));
  CHECK(strstr(json, "\"dataset\":\"person\"") != NULL, "%s", json);
  CHECK(strstr(json, "marital_status_code") == NULL, "a not-shared field is never listed");
  /* A password session (gs_session_open): the citizen ID in clear, a sensitive item, is
     withheld until the host says the user passed a second factor. */
  CHECK(strstr(json, "citizen_id") == NULL, "L4 in clear is not listed for a password login: %s",
        json);
  gs_string_free(json);

  /* Closed and never-opened handles. */
  CHECK_STATUS(gs_session_close(s), GS_OK, "");
  CHECK_STATUS(gs_session_close(s), GS_INVALID_HANDLE, gs_last_error());
  CHECK_STATUS(gs_session_query(s, "SELECT 1", &stream), GS_INVALID_HANDLE, gs_last_error());
  CHECK(strstr(gs_session_errmsg(s), "invalid session handle") != NULL, "%s",
        gs_session_errmsg(s));
  CHECK_STATUS(gs_session_open((gs_engine *)0x7777, "alice", "FULL", &s), GS_INVALID_HANDLE,
               gs_last_error());
  CHECK(strcmp(gs_status_name(GS_ACCESS_DENIED), "GS_ACCESS_DENIED") == 0, "status names");
  CHECK(strlen(gs_version()) > 0, "version");
  printf("OK misuse\n");
}

/* ---- lookup by key and verify ---- */

/* The rows of a stream as text, one line each, into `buf`; returns the row count. */
static int64_t drain_text(struct ArrowArrayStream *stream, char *buf, size_t size) {
  FILE *tmp = tmpfile();
  CHECK(tmp != NULL, "tmpfile");
  int64_t rows = drain(stream, tmp);
  rewind(tmp);
  size_t n = fread(buf, 1, size - 1, tmp);
  buf[n] = 0;
  fclose(tmp);
  return rows;
}

static void services(gs_engine *engine, const char *scratch) {
  gs_session *s = NULL, *v = NULL;
  CHECK_STATUS(open_strong(engine, "alice", "FULL", &s), GS_OK, gs_engine_errmsg(engine));
  /* A verify-only purpose opens a session too (password login: verify reveals no value). */
  CHECK_STATUS(gs_session_open(engine, "alice", "VER", &v), GS_OK, gs_engine_errmsg(engine));
  struct ArrowArrayStream stream, claims, answer;
  char text[4096];

  /* Lookup: a known key and an unknown one; only the known subject comes back. */
  CHECK_STATUS(
      gs_session_query(s, "SELECT citizen_id FROM person ORDER BY citizen_id LIMIT 1", &stream),
      GS_OK, gs_session_errmsg(s));
  CHECK(drain_text(&stream, text, sizeof text) == 1, "one key");
  text[strcspn(text, "\n")] = 0;
  CHECK(strlen(text) == 18, "a citizen ID: %s", text);
  char keys[160];
  snprintf(keys, sizeof keys, "[\"%.18s\", \"11010519491231002X\"]", text);
  CHECK_STATUS(gs_session_lookup(s, "person", keys, &stream), GS_OK, gs_session_errmsg(s));
  CHECK(drain_text(&stream, text, sizeof text) == 1, "the known key only: %s", text);
  CHECK_STATUS(gs_session_lookup(s, "person", NULL, &stream), GS_INVALID_ARGUMENT,
               gs_session_errmsg(s));
  CHECK_STATUS(gs_session_lookup(s, "person", "{\"not\": \"a list\"}", &stream),
               GS_INVALID_ARGUMENT, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_lookup(v, "person", keys, &stream), GS_ACCESS_DENIED,
               gs_session_errmsg(v));

  /* Bound parameters: two citizen IDs (an engine stream is a parameter stream) run as one
   * statement; the injection text, bound, is a value nobody has. */
  struct ArrowArrayStream params;
  const char *by_id = "SELECT citizen_id FROM person WHERE citizen_id = $1";
  CHECK_STATUS(
      gs_session_query(s, "SELECT citizen_id FROM person ORDER BY citizen_id LIMIT 2", &params),
      GS_OK, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query_params(s, by_id, &params, &stream), GS_OK, gs_session_errmsg(s));
  CHECK(params.release == NULL, "the parameter stream was taken over");
  CHECK(drain_text(&stream, text, sizeof text) == 2, "both subjects: %s", text);
  CHECK_STATUS(gs_session_query(s, "SELECT ''' OR ''1''=''1' AS p", &params), GS_OK,
               gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query_params(s, by_id, &params, &stream), GS_OK, gs_session_errmsg(s));
  CHECK(drain_text(&stream, text, sizeof text) == 0, "the injection matches nobody: %s", text);
  /* Placeholders without values, and a NULL parameter stream, are refused. */
  CHECK_STATUS(gs_session_query(s, by_id, &stream), GS_INVALID_INPUT, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_query_params(s, by_id, NULL, &stream), GS_INVALID_ARGUMENT,
               gs_session_errmsg(s));

  /* Verify: the engine's own (citizen_id, name) stream is a claims stream; all match. */
  CHECK_STATUS(gs_session_query(s, "SELECT citizen_id, name FROM person ORDER BY citizen_id LIMIT 5",
                                &claims),
               GS_OK, gs_session_errmsg(s));
  CHECK_STATUS(gs_session_verify(v, "person", &claims, &answer), GS_OK, gs_session_errmsg(v));
  CHECK(claims.release == NULL, "the claims stream was taken over");
  CHECK(drain_text(&answer, text, sizeof text) == 5, "one answer per claim");
  CHECK(strcmp(text, "true\ttrue\ntrue\ttrue\ntrue\ttrue\ntrue\ttrue\ntrue\ttrue\n") == 0,
        "found and matched, and nothing else: %s", text);
  /* No verify grant for FULL: refused, and the claims stream is released all the same. */
  CHECK_STATUS(gs_session_query(s, "SELECT citizen_id, name FROM person LIMIT 1", &claims), GS_OK,
               gs_session_errmsg(s));
  CHECK_STATUS(gs_session_verify(s, "person", &claims, &answer), GS_ACCESS_DENIED,
               gs_session_errmsg(s));
  CHECK(claims.release == NULL, "released on a refusal too");
  CHECK_STATUS(gs_session_verify(v, "person", NULL, &answer), GS_INVALID_ARGUMENT,
               gs_session_errmsg(v));
  /* Each subject at most three times a day: the first subject was checked once. */
  for (int i = 0; i < 3; i++) {
    CHECK_STATUS(gs_session_query(s, "SELECT citizen_id, name FROM person ORDER BY citizen_id LIMIT 1",
                                  &claims),
                 GS_OK, gs_session_errmsg(s));
    gs_status st = gs_session_verify(v, "person", &claims, &answer);
    if (i < 2) {
      CHECK_STATUS(st, GS_OK, gs_session_errmsg(v));
      CHECK(drain_text(&answer, text, sizeof text) == 1, "one answer");
    } else {
      CHECK_STATUS(st, GS_LIMIT_EXCEEDED, gs_session_errmsg(v));
      CHECK(strstr(gs_session_errmsg(v), "one subject") != NULL, "%s", gs_session_errmsg(v));
    }
  }
  CHECK_STATUS(gs_session_close(v), GS_OK, "");

  /* Export: a CSV with its manifest; a query session has no export grant. */
  gs_session *x = NULL;
  CHECK_STATUS(gs_session_open(engine, "alice", "EXP", &x), GS_OK, gs_engine_errmsg(engine));
  char dir[1024], path[1200];
  snprintf(dir, sizeof dir, "%s/export", scratch);
  char *manifest = NULL;
  CHECK_STATUS(gs_session_export(x, "person", "csv", dir, &manifest), GS_OK, gs_session_errmsg(x));
  CHECK(strstr(manifest, "\"rows\":1500") != NULL, "%s", manifest);
  CHECK(strstr(manifest, "\"blake3\"") != NULL, "%s", manifest);
  gs_string_free(manifest);
  snprintf(path, sizeof path, "%s/person.csv", dir);
  FILE *csv = fopen(path, "r");
  CHECK(csv != NULL, "the export file %s", path);
  CHECK(fgets(text, sizeof text, csv) != NULL && strcmp(text, "sex_code\n") == 0, "%s", text);
  fclose(csv);
  CHECK_STATUS(gs_session_export(x, "person", "csv", dir, &manifest), GS_INVALID_INPUT,
               gs_session_errmsg(x));
  CHECK(manifest == NULL, "no manifest on failure");
  CHECK_STATUS(gs_session_export(x, "person", "xlsx", dir, &manifest), GS_INVALID_INPUT,
               gs_session_errmsg(x));
  CHECK_STATUS(gs_session_export(s, "person", "csv", dir, &manifest), GS_ACCESS_DENIED,
               gs_session_errmsg(s));
  CHECK_STATUS(gs_session_close(x), GS_OK, "");

  /* Aggregates: groups of at least 100; rows are refused. */
  gs_session *g = NULL;
  CHECK_STATUS(gs_session_open(engine, "alice", "AGG", &g), GS_OK, gs_engine_errmsg(engine));
  CHECK_STATUS(gs_session_aggregate(g, "SELECT sex_code, count(*) AS n FROM person GROUP BY 1 "
                                       "ORDER BY 1", &stream),
               GS_OK, gs_session_errmsg(g));
  CHECK(drain_text(&stream, text, sizeof text) == 2, "two sexes: %s", text);
  CHECK_STATUS(gs_session_aggregate(g, "SELECT sex_code FROM person", &stream), GS_ACCESS_DENIED,
               gs_session_errmsg(g));
  CHECK(strstr(gs_session_errmsg(g), "aggregate-only") != NULL, "%s", gs_session_errmsg(g));
  CHECK_STATUS(gs_session_aggregate(g, NULL, &stream), GS_INVALID_ARGUMENT, gs_session_errmsg(g));
  CHECK_STATUS(gs_session_close(g), GS_OK, "");

  /* The change feed: the same changes until acknowledged, none after. */
  gs_session *p = NULL;
  CHECK_STATUS(open_strong(engine, "alice", "PSH", &p), GS_OK, gs_engine_errmsg(engine));
  uint64_t token = 0, again = 0;
  CHECK_STATUS(gs_session_changes(p, "person", &stream, &token), GS_OK, gs_session_errmsg(p));
  CHECK(drain(&stream, NULL) == 1500, "every subject, as inserts");
  CHECK_STATUS(gs_session_changes(p, "person", &stream, &again), GS_OK, gs_session_errmsg(p));
  CHECK(drain(&stream, NULL) == 1500 && again == token, "again until acknowledged");
  CHECK_STATUS(gs_session_ack(p, "person", token), GS_OK, gs_session_errmsg(p));
  CHECK_STATUS(gs_session_changes(p, "person", &stream, &again), GS_OK, gs_session_errmsg(p));
  CHECK(drain(&stream, NULL) == 0, "nothing after the acknowledgement");
  CHECK_STATUS(gs_session_changes(p, "person", &stream, NULL), GS_INVALID_ARGUMENT,
               gs_session_errmsg(p));
  CHECK_STATUS(gs_session_ack(p, "person", token + 100), GS_INVALID_INPUT, gs_session_errmsg(p));
  CHECK_STATUS(gs_session_close(p), GS_OK, "");
  CHECK_STATUS(gs_session_close(s), GS_OK, "");

  /* Open data: the provider's approver releases a k-anonymous extract; a not-open item and a
   * consumer are refused, with nothing written. */
  char open_dir[1024];
  snprintf(open_dir, sizeof open_dir, "%s/open", scratch);
  char *release = NULL;
  CHECK_STATUS(gs_engine_release_open_data(
                   engine, "appr",
                   "{\"dataset\":\"person\",\"fields\":[\"citizen_id\",\"sex_code\"],"
                   "\"k\":5,\"max_suppression\":0.05}",
                   open_dir, &release),
               GS_ACCESS_DENIED, gs_engine_errmsg(engine));
  CHECK(strstr(gs_engine_errmsg(engine), "not open") != NULL, "%s", gs_engine_errmsg(engine));
  CHECK(release == NULL, "no manifest on refusal");
  CHECK_STATUS(gs_engine_release_open_data(
                   engine, "alice",
                   "{\"dataset\":\"person\",\"fields\":[\"sex_code\"],\"k\":5,"
                   "\"max_suppression\":0.05}",
                   open_dir, &release),
               GS_ACCESS_DENIED, gs_engine_errmsg(engine));
  CHECK_STATUS(gs_engine_release_open_data(engine, "appr", "{\"dataset\":\"person\"}", open_dir,
                                           &release),
               GS_INVALID_ARGUMENT, gs_engine_errmsg(engine));
  CHECK(strstr(gs_engine_errmsg(engine), "fields") != NULL, "%s", gs_engine_errmsg(engine));
  CHECK_STATUS(gs_engine_release_open_data(
                   engine, "appr",
                   "{\"dataset\":\"person\",\"fields\":[\"hukou_region_code\",\"birth_date\","
                   "\"sex_code\"],\"k\":5,\"max_suppression\":0.05}",
                   open_dir, &release),
               GS_OK, gs_engine_errmsg(engine));
  CHECK(strstr(release, "\"rows\":1500") != NULL, "%s", release);
  CHECK(strstr(release, "\"generalisation\"") != NULL, "%s", release);
  gs_string_free(release);
  snprintf(path, sizeof path, "%s/person.open.parquet", open_dir);
  FILE *extract = fopen(path, "r");
  CHECK(extract != NULL, "the extract %s", path);
  fclose(extract);
  printf("OK services\n");
}

/* ---- administrative calls on a fresh store ---- */

static const char *GRANT_UNCONDITIONAL =
    "{\"consumer_dept\":\"STAT\",\"users\":[],\"dataset\":\"person\","
    "\"fields\":[{\"field\":\"sex_code\",\"treatment\":\"clear\"},"
    "{\"field\":\"hukou_region_code\",\"treatment\":\"clear\"}],"
    "\"purpose_code\":\"CENSUS\",\"purpose_text\":\"population statistics\","
    "\"scope\":{\"regions\":null,\"subjects\":null},\"modes\":[\"query\"],"
    "\"valid_from\":\"2020-01-01T00:00:00Z\",\"valid_until\":\"2099-01-01T00:00:00Z\"}";

static const char *GRANT_CONDITIONAL =
    "{\"consumer_dept\":\"STAT\",\"users\":[],\"dataset\":\"person\","
    "\"fields\":[{\"field\":\"name\",\"treatment\":{\"masked\":\"name\"}}],"
    "\"purpose_code\":\"VERIFY\",\"purpose_text\":\"identity check\","
    "\"scope\":{\"regions\":null,\"subjects\":null},\"modes\":[\"query\"],"
    "\"valid_from\":\"2020-01-01T00:00:00Z\",\"valid_until\":\"2099-01-01T00:00:00Z\"}";

static int64_t count_rows(gs_session *s, const char *sql, gs_status *st) {
  struct ArrowArrayStream stream;
  *st = gs_session_query(s, sql, &stream);
  return *st == GS_OK ? drain(&stream, NULL) : -1;
}

/* A query long enough to need stopping, run on its own thread. */
typedef struct {
  gs_session *session;
  gs_status status;
  int rc;
  char error[512];
  volatile int done;
} slow_query;

static void *run_slow(void *arg) {
  slow_query *q = arg;
  struct ArrowArrayStream stream;
  q->status = gs_session_query(
      q->session,
      "SELECT max(x.name || y.name || z.name) FROM person x, person y, person z",
      &stream);
  if (q->status == GS_OK) {
    struct ArrowArray array;
    q->rc = stream.get_next(&stream, &array);
    if (q->rc != 0) {
      const char *e = stream.get_last_error(&stream);
      snprintf(q->error, sizeof q->error, "%s", e ? e : "");
    } else if (array.release) {
      array.release(&array);
    }
    stream.release(&stream);
  }
  q->done = 1;
  return NULL;
}

static void admin(const char *scratch, const char *csv) {
  char path[1024];
  snprintf(path, sizeof path, "%s/admin-store", scratch);
  const char *founder = "{\"user\":\"root\",\"name\":\"平台管理员\",\"department\":\"OPS\","
                        "\"department_name\":\"平台\",\"region\":\"430000\"}";
  CHECK_STATUS(gs_store_init(NULL, founder), GS_INVALID_ARGUMENT, gs_last_error());
  CHECK_STATUS(gs_store_init(path, NULL), GS_INVALID_ARGUMENT, gs_last_error());
  CHECK_STATUS(gs_store_init(path, founder), GS_OK, gs_last_error());
  /* A second init names no one new. */
  CHECK_STATUS(gs_store_init(path, "{\"user\":\"eve\",\"name\":\"E\",\"department\":\"OPS\","
                                   "\"department_name\":\"平台\",\"region\":\"430000\"}"),
               GS_INVALID_INPUT, gs_last_error());
  gs_engine *e = NULL;
  CHECK_STATUS(gs_engine_open(path, &e), GS_OK, gs_last_error());
  const char *depts[] = {
      "{\"code\":\"PSB\",\"name\":\"省公安厅\",\"region\":\"430000\",\"status\":\"active\"}",
      "{\"code\":\"STAT\",\"name\":\"统计局\",\"region\":\"430000\",\"status\":\"active\"}"};
  /* Nobody acts as a principal that does not exist. */
  CHECK_STATUS(gs_engine_upsert_department(e, "ghost", depts[0]), GS_ACCESS_DENIED,
               gs_engine_errmsg(e));
  for (int i = 0; i < 2; i++)
    CHECK_STATUS(gs_engine_upsert_department(e, "root", depts[i]), GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_upsert_department(e, "root", "{\"code\":"), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(e));
  CHECK(strstr(gs_engine_errmsg(e), "department_json") != NULL, "%s", gs_engine_errmsg(e));
  const char *users[] = {
      "{\"id\":\"admin\",\"name\":\"管理员\",\"department\":\"OPS\",\"roles\":[\"platform_admin\"],"
      "\"status\":\"active\"}",
      "{\"id\":\"appr\",\"name\":\"审批人\",\"department\":\"PSB\","
      "\"roles\":[\"provider_approver\"],\"status\":\"active\"}",
      "{\"id\":\"stat1\",\"name\":\"分析员\",\"department\":\"STAT\",\"roles\":[\"consumer\"],"
      "\"status\":\"active\"}",
      "{\"id\":\"aud\",\"name\":\"审计员\",\"department\":\"OPS\",\"roles\":[\"auditor\"],"
      "\"status\":\"active\"}",
      "{\"id\":\"op\",\"name\":\"运维员\",\"department\":\"OPS\",\"roles\":[\"operator\"],"
      "\"status\":\"active\"}"};
  for (int i = 0; i < 5; i++)
    CHECK_STATUS(gs_engine_upsert_user(e, "root", users[i]), GS_OK, gs_engine_errmsg(e));
  /* A consumer cannot make themselves (or anyone) an approver. */
  CHECK_STATUS(gs_engine_upsert_user(e, "stat1",
                                     "{\"id\":\"evil\",\"name\":\"E\",\"department\":\"PSB\","
                                     "\"roles\":[\"provider_approver\"],\"status\":\"active\"}"),
               GS_ACCESS_DENIED, gs_engine_errmsg(e));
  CHECK(strstr(gs_engine_errmsg(e), "platform-admin") != NULL, "%s", gs_engine_errmsg(e));

  char *json = NULL;
  CHECK_STATUS(gs_engine_load(e, "op", "person", csv, false, false, NULL, NULL),
               GS_INVALID_ARGUMENT, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_load(e, "op", "person", "/nonexistent.csv", false, false, NULL, &json),
               GS_NOT_FOUND, gs_engine_errmsg(e));
  CHECK(json == NULL, "no summary after a failure");
  /* Loading is the operator's act, not the administrator's. */
  CHECK_STATUS(gs_engine_load(e, "admin", "person", csv, false, false, NULL, &json),
               GS_ACCESS_DENIED, gs_engine_errmsg(e));
  CHECK(strstr(gs_engine_errmsg(e), "operator") != NULL, "%s", gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_load(e, "op", "person", csv, false, false,
                              "{\"handover_person\":\"李明\",\"receiver\":\"王芳\"}", &json),
               GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"version\":1") != NULL && strstr(json, "李明") != NULL, "%s", json);
  gs_string_free(json);

  uint64_t grant = 0;
  /* A consumer may not grant; a conditional field cannot be granted on request. */
  CHECK_STATUS(gs_engine_request_grant(e, "stat1", GRANT_UNCONDITIONAL, &grant), GS_ACCESS_DENIED,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_request_grant(e, "admin", GRANT_CONDITIONAL, &grant), GS_ACCESS_DENIED,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_request_grant(e, "admin", GRANT_UNCONDITIONAL, NULL), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_request_grant(e, "admin", GRANT_UNCONDITIONAL, &grant), GS_OK,
               gs_engine_errmsg(e));
  CHECK(grant > 0, "grant id");
  uint64_t approved = 0, rejected = 7;
  CHECK_STATUS(gs_engine_decide_request(e, "appr", GRANT_CONDITIONAL, true, NULL, &approved), GS_OK,
               gs_engine_errmsg(e));
  CHECK(approved > 0, "approval creates a grant");
  CHECK_STATUS(
      gs_engine_decide_request(e, "appr", GRANT_CONDITIONAL, false, "purpose too broad", &rejected),
      GS_OK, gs_engine_errmsg(e));
  CHECK(rejected == 0, "a rejection creates no grant");

  gs_session *s = NULL;
  gs_status st;
  /* Host systems are principals: registered by a platform administrator, named by the
     session, suspended with effect at the next query. */
  const char *census = "{\"id\":\"census\",\"name\":\"人口统计系统\",\"department\":\"STAT\","
                       "\"status\":\"active\"}";
  CHECK_STATUS(gs_engine_upsert_system(e, "stat1", census), GS_ACCESS_DENIED, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_upsert_system(e, "admin", census), GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_session_open_as(e, "{\"user\":\"stat1\",\"purpose\":\"CENSUS\",\"system\":\"nope\"}",
                                  &s),
               GS_ACCESS_DENIED, gs_engine_errmsg(e));
  CHECK_STATUS(gs_session_open_as(
                   e, "{\"user\":\"stat1\",\"purpose\":\"CENSUS\",\"system\":\"census\"}", &s),
               GS_OK, gs_engine_errmsg(e));
  count_rows(s, "SELECT sex_code FROM person", &st);
  CHECK(st == GS_OK, "through a registered system: %s", gs_session_errmsg(s));
  CHECK_STATUS(gs_engine_set_system_active(e, "admin", "census", false), GS_OK, gs_engine_errmsg(e));
  count_rows(s, "SELECT sex_code FROM person", &st);
  CHECK(st == GS_ACCESS_DENIED && strstr(gs_session_errmsg(s), "census") != NULL,
        "a suspended system's session: %s", gs_status_name(st));
  CHECK_STATUS(gs_session_close(s), GS_OK, "");
  CHECK_STATUS(gs_session_open(e, "stat1", "CENSUS", &s), GS_OK, gs_engine_errmsg(e));
  int64_t n = count_rows(s, "SELECT sex_code FROM person", &st);
  CHECK(st == GS_OK && n > 0, "%s: %s", gs_status_name(st), gs_session_errmsg(s));
  count_rows(s, "SELECT name FROM person", &st);
  CHECK(st == GS_ACCESS_DENIED, "name is not in the CENSUS grant: %s", gs_status_name(st));
  CHECK(strstr(gs_session_errmsg(s), "person.name") != NULL, "%s", gs_session_errmsg(s));

  CHECK_STATUS(gs_engine_policy(e, "admin", &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"stat1\":{") != NULL && strstr(json, "\"appr\":{") != NULL, "%s", json);
  gs_string_free(json);
  /* A consumer sees their own department's users, not the others'. */
  CHECK_STATUS(gs_engine_policy(e, "stat1", &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"stat1\":{") != NULL && strstr(json, "\"appr\":{") == NULL, "%s", json);
  gs_string_free(json);
  CHECK_STATUS(gs_engine_policy(e, "ghost", &json), GS_ACCESS_DENIED, gs_engine_errmsg(e));

  CHECK_STATUS(gs_engine_revoke_grant(e, "admin", grant, "census finished"), GS_OK,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_revoke_grant(e, "admin", 987654, "none"), GS_NOT_FOUND,
               gs_engine_errmsg(e));
  count_rows(s, "SELECT sex_code FROM person", &st);
  CHECK(st == GS_ACCESS_DENIED, "revoked in an open session: %s", gs_status_name(st));
  CHECK_STATUS(gs_session_close(s), GS_OK, "");

  CHECK_STATUS(gs_session_open(e, "stat1", "VERIFY", &s), GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_set_user_active(e, "root", "stat1", false), GS_OK, gs_engine_errmsg(e));
  count_rows(s, "SELECT name FROM person", &st);
  CHECK(st == GS_ACCESS_DENIED, "suspended user: %s", gs_status_name(st));
  CHECK_STATUS(gs_engine_set_user_active(e, "root", "stat1", true), GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_set_department_active(e, "root", "STAT", false), GS_OK,
               gs_engine_errmsg(e));
  count_rows(s, "SELECT name FROM person", &st);
  CHECK(st == GS_ACCESS_DENIED, "suspended department: %s", gs_status_name(st));
  CHECK_STATUS(gs_engine_set_department_active(e, "root", "STAT", true), GS_OK,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_set_department_active(e, "root", "NOPE", true), GS_NOT_FOUND,
               gs_engine_errmsg(e));
  n = count_rows(s, "SELECT name FROM person", &st);
  CHECK(st == GS_OK && n > 0, "reactivated: %s", gs_session_errmsg(s));
  /* Cancel from another thread: the running query stops with "interrupted". Cancelling is
     repeated until it lands, since the query may still be planning the first time. */
  slow_query q = {.session = s};
  pthread_t runner;
  CHECK(pthread_create(&runner, NULL, run_slow, &q) == 0, "pthread_create");
  for (int i = 0; i < 1200 && !q.done; i++) {
    struct timespec pause = {0, 100 * 1000 * 1000};
    nanosleep(&pause, NULL);
    CHECK_STATUS(gs_session_cancel(s), GS_OK, gs_session_errmsg(s));
  }
  pthread_join(runner, NULL);
  CHECK(q.status == GS_OK && q.rc != 0 && strstr(q.error, "interrupted") != NULL,
        "cancelled query: status %s, rc %d, error '%s'", gs_status_name(q.status), q.rc, q.error);
  n = count_rows(s, "SELECT name FROM person", &st);
  CHECK(st == GS_OK && n > 0, "the session works after a cancel: %s", gs_session_errmsg(s));
  CHECK_STATUS(gs_session_cancel(NULL), GS_INVALID_HANDLE, gs_last_error());
  CHECK_STATUS(gs_session_close(s), GS_OK, "");

  /* The audit trail: verify, checkpoint, who-accessed, SQL for auditors. */
  CHECK_STATUS(gs_engine_audit_verify(e, "stat1", NULL, &json), GS_ACCESS_DENIED,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_audit_verify(e, "aud", NULL, &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"verdict\":\"intact\"") != NULL, "%s", json);
  gs_string_free(json);
  char *cp = NULL;
  CHECK_STATUS(gs_engine_audit_checkpoint(e, "aud", &cp), GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_audit_verify(e, "aud", cp, &json), GS_OK, gs_engine_errmsg(e));
  gs_string_free(json);
  gs_string_free(cp);
  CHECK_STATUS(gs_engine_audit_verify(e, "aud", "{\"seq\":1,\"hash\":\"00\"}", &json),
               GS_INTEGRITY, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"verdict\":\"broken\"") != NULL, "%s", json);
  CHECK(strstr(gs_engine_errmsg(e), "checkpoint") != NULL, "%s", gs_engine_errmsg(e));
  gs_string_free(json);
  CHECK_STATUS(gs_engine_audit_verify(e, "aud", "not json", &json), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_who_accessed(e, "stat1", "110105194912310021", &json), GS_ACCESS_DENIED,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_who_accessed(e, "aud", "110105194912310021", &json), GS_OK,
               gs_engine_errmsg(e));
  CHECK(json[0] == '[', "%s", json);
  gs_string_free(json);
  /* A key nobody read (or that does not exist) is simply never accessed. */
  CHECK_STATUS(gs_engine_who_accessed(e, "aud", "not-a-key", &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strcmp(json, "[]") == 0, "%s", json);
  gs_string_free(json);
  CHECK_STATUS(gs_engine_who_accessed(e, "aud", NULL, &json), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(e));
  struct ArrowArrayStream stream;
  CHECK_STATUS(gs_engine_audit_query(e, "aud", "SELECT kind FROM audit_log", &stream), GS_OK,
               gs_engine_errmsg(e));
  CHECK(drain(&stream, NULL) > 10, "the auditor sees the records");
  CHECK_STATUS(gs_engine_audit_query(e, "nobody", "SELECT kind FROM audit_log", &stream),
               GS_ACCESS_DENIED, gs_engine_errmsg(e));

  /* The sharing workflow: the service catalog, an application through the completeness check
     and the provider's decision, refusals, reports. */
  CHECK_STATUS(gs_engine_upsert_user(e, "root",
                                     "{\"id\":\"coord\",\"name\":\"协调员\",\"department\":\"OPS\","
                                     "\"roles\":[\"coordinator\"],\"status\":\"active\"}"),
               GS_OK, gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_service_catalog(e, "stat1", &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"dataset\":\"person\"") != NULL && strstr(json, "\"approval_days\":3"),
        "%s", json);
  gs_string_free(json);
  CHECK_STATUS(gs_engine_service_catalog(e, "ghost", &json), GS_ACCESS_DENIED, gs_engine_errmsg(e));
  const char *apply =
      "{\"act\":\"apply\",\"legal_basis\":\"《统计法》第七条\",\"request\":{"
      "\"consumer_dept\":\"STAT\",\"users\":[],\"dataset\":\"person\","
      "\"fields\":[{\"field\":\"birth_date\",\"treatment\":{\"masked\":\"date_to_year\"}}],"
      "\"purpose_code\":\"AGE\",\"purpose_text\":\"年龄结构统计\","
      "\"scope\":{\"regions\":null,\"subjects\":null},\"modes\":[\"query\"],"
      "\"valid_from\":\"2020-01-01T00:00:00Z\",\"valid_until\":\"2099-01-01T00:00:00Z\"}}";
  CHECK_STATUS(gs_engine_act(e, "stat1", apply, &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"state\":\"submitted\"") != NULL, "%s", json);
  unsigned long long app = 0;
  CHECK(sscanf(strstr(json, "\"id\":"), "\"id\":%llu", &app) == 1 && app > 0, "%s", json);
  gs_string_free(json);
  char act[256];
  snprintf(act, sizeof act, "{\"act\":\"complete\",\"application\":%llu}", app);
  CHECK_STATUS(gs_engine_act(e, "stat1", act, &json), GS_ACCESS_DENIED, gs_engine_errmsg(e));
  CHECK(strstr(gs_engine_errmsg(e), "platform-admin") != NULL, "%s", gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_act(e, "admin", act, &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"state\":\"under_review\"") != NULL, "%s", json);
  gs_string_free(json);
  snprintf(act, sizeof act, "{\"act\":\"decide\",\"application\":%llu,\"approve\":false}", app);
  CHECK_STATUS(gs_engine_act(e, "appr", act, &json), GS_INVALID_INPUT, gs_engine_errmsg(e));
  snprintf(act, sizeof act,
           "{\"act\":\"decide\",\"application\":%llu,\"approve\":true,\"reason\":\"同意\"}", app);
  CHECK_STATUS(gs_engine_act(e, "appr", act, &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(json, "\"approved\":true") != NULL, "%s", json);
  gs_string_free(json);
  CHECK_STATUS(gs_engine_act(e, "appr", "{\"act\":\"fly\"}", &json), GS_INVALID_ARGUMENT,
               gs_engine_errmsg(e));
  CHECK_STATUS(gs_engine_report_query(e, "coord", "SELECT state FROM applications", &stream), GS_OK,
               gs_engine_errmsg(e));
  CHECK(drain(&stream, NULL) == 1, "one application in the report");
  CHECK_STATUS(gs_engine_report_query(e, "stat1", "SELECT * FROM usage", &stream),
               GS_ACCESS_DENIED, gs_engine_errmsg(e));
  char *html = NULL;
  CHECK_STATUS(gs_engine_report_html(e, "coord", &html), GS_OK, gs_engine_errmsg(e));
  CHECK(strstr(html, "<svg") != NULL, "the report has charts");
  gs_string_free(html);
  CHECK_STATUS(gs_engine_conflicts(e, "coord", NULL, &json), GS_OK, gs_engine_errmsg(e));
  CHECK(strcmp(json, "[]") == 0, "%s", json);
  gs_string_free(json);
  CHECK_STATUS(gs_engine_close(e), GS_OK, "");
  CHECK_STATUS(gs_engine_close(e), GS_INVALID_HANDLE, gs_last_error());
  printf("OK admin\n");
}

/* ---- several threads, each with its own session, querying one engine ---- */

struct worker {
  gs_engine *engine;
  int64_t expect;
  int failures;
};

static void *work(void *arg) {
  struct worker *w = (struct worker *)arg;
  gs_session *s = NULL;
  if (open_strong(w->engine, "alice", "FULL", &s) != GS_OK) {
    w->failures++;
    return NULL;
  }
  for (int i = 0; i < 4; i++) {
    gs_status st;
    int64_t n = count_rows(s, "SELECT citizen_id FROM person WHERE sex_code = '2'", &st);
    if (st != GS_OK || n != w->expect) w->failures++;
    /* A denial on this thread leaves its message here, whatever the other threads do. */
    count_rows(s, "SELECT marital_status_code FROM person", &st);
    if (st != GS_ACCESS_DENIED || strstr(gs_session_errmsg(s), "marital_status_code") == NULL)
      w->failures++;
  }
  gs_session_close(s);
  return NULL;
}

static void threads(gs_engine *engine) {
  gs_session *s = NULL;
  gs_status st;
  CHECK_STATUS(open_strong(engine, "alice", "FULL", &s), GS_OK, gs_engine_errmsg(engine));
  int64_t expect = count_rows(s, "SELECT citizen_id FROM person WHERE sex_code = '2'", &st);
  CHECK(st == GS_OK && expect > 0, "%s", gs_session_errmsg(s));
  gs_session_close(s);
  enum { N = 4 };
  pthread_t t[N];
  struct worker w[N];
  for (int i = 0; i < N; i++) {
    w[i] = (struct worker){engine, expect, 0};
    CHECK(pthread_create(&t[i], NULL, work, &w[i]) == 0, "pthread_create");
  }
  for (int i = 0; i < N; i++) {
    pthread_join(t[i], NULL);
    CHECK(w[i].failures == 0, "thread %d had %d failures", i, w[i].failures);
  }
  printf("OK threads %d\n", N);
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s STORE CASES CSV SCRATCH\n", argv[0]);
    return 2;
  }
  gs_engine *engine = NULL;
  CHECK_STATUS(gs_engine_open(argv[1], &engine), GS_OK, gs_last_error());
  run_cases(engine, argv[2]);
  misuse(engine);
  services(engine, argv[4]);
  threads(engine);
  CHECK_STATUS(gs_engine_close(engine), GS_OK, "");
  admin(argv[4], argv[3]);
  printf("OK all\n");
  return 0;
}
