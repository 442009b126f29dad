/* A host integrator's first govshare program: open a store, query as a user for a purpose,
 * print the rows from the Arrow C stream, and handle a denial.
 *
 *   cc -I ffi/include ffi/examples/query.c -L target/debug -lgovshare -o query
 *   LD_LIBRARY_PATH=target/debug ./query STORE USER PURPOSE "SELECT ..."
 *
 * Exit codes: 0 rows printed, 5 access denied (the message says what is missing), 1 other
 * errors. Only the string and integer columns are printed as values; other types print their
 * Arrow format string, which is enough to show the shape of a result.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "govshare.h"

static int is_null(const struct ArrowArray *col, int64_t i) {
  const uint8_t *validity = (const uint8_t *)col->buffers[0];
  int64_t j = col->offset + i;
  return validity != NULL && !(validity[j / 8] & (1 << (j % 8)));
}

/* Print one cell of a column; handles utf8 ("u"), utf8 view ("vu"), int64 ("l"), int32 ("i"). */
static void print_cell(const struct ArrowSchema *type, const struct ArrowArray *col, int64_t i) {
  int64_t j = col->offset + i;
  if (is_null(col, i)) {
    fputs("NULL", stdout);
  } else if (strcmp(type->format, "u") == 0) {
    const int32_t *offsets = (const int32_t *)col->buffers[1];
    const char *data = (const char *)col->buffers[2];
    fwrite(data + offsets[j], 1, (size_t)(offsets[j + 1] - offsets[j]), stdout);
  } else if (strcmp(type->format, "vu") == 0) {
    /* 16-byte views: length, then either the inline bytes (<= 12) or prefix, buffer, offset. */
    const uint8_t *view = (const uint8_t *)col->buffers[1] + 16 * j;
    int32_t len;
    memcpy(&len, view, 4);
    if (len <= 12) {
      fwrite(view + 4, 1, (size_t)len, stdout);
    } else {
      int32_t buf, off;
      memcpy(&buf, view + 8, 4);
      memcpy(&off, view + 12, 4);
      fwrite((const char *)col->buffers[2 + buf] + off, 1, (size_t)len, stdout);
    }
  } else if (strcmp(type->format, "l") == 0) {
    printf("%" PRId64, ((const int64_t *)col->buffers[1])[j]);
  } else if (strcmp(type->format, "i") == 0) {
    printf("%" PRId32, ((const int32_t *)col->buffers[1])[j]);
  } else {
    printf("<%s>", type->format);
  }
}

int main(int argc, char **argv) {
  if (argc != 5) {
    fprintf(stderr, "usage: %s STORE USER PURPOSE SQL\n", argv[0]);
    return 1;
  }
  gs_engine *engine = NULL;
  gs_session *session = NULL;
  struct ArrowArrayStream stream;
  struct ArrowSchema schema;
  int exit_code = 1;

  if (gs_engine_open(argv[1], &engine) != GS_OK) {
    /* No handle yet: the message is the thread's last error. */
    fprintf(stderr, "cannot open store: %s\n", gs_last_error());
    return 1;
  }
  /* The host says how it authenticated the user: sensitive items in clear (grade L4, e.g. the
     citizen ID) need a second factor. (User ids and purpose codes hold no quotes.) */
  char login[512];
  snprintf(login, sizeof login,
           "{\"user\":\"%s\",\"purpose\":\"%s\",\"auth\":\"second_factor\"}", argv[2],
           argv[3]);
  if (gs_session_open_as(engine, login, &session) != GS_OK) {
    fprintf(stderr, "cannot open session: %s\n", gs_engine_errmsg(engine));
    goto done;
  }
  gs_status st = gs_session_query(session, argv[4], &stream);
  if (st == GS_ACCESS_DENIED) {
    /* A denial is an answer, not a crash: tell the user what to apply for. */
    printf("denied: %s\n", gs_session_errmsg(session));
    exit_code = 5;
    goto done;
  }
  if (st != GS_OK) {
    fprintf(stderr, "%s: %s\n", gs_status_name(st), gs_session_errmsg(session));
    goto done;
  }
  if (stream.get_schema(&stream, &schema) != 0) {
    fprintf(stderr, "schema: %s\n", stream.get_last_error(&stream));
    stream.release(&stream);
    goto done;
  }
  for (int64_t c = 0; c < schema.n_children; c++) {
    printf("%s%s", c ? "\t" : "", schema.children[c]->name);
  }
  printf("\n");
  int64_t rows = 0;
  for (;;) {
    struct ArrowArray batch;
    if (stream.get_next(&stream, &batch) != 0) {
      fprintf(stderr, "next: %s\n", stream.get_last_error(&stream));
      break;
    }
    if (batch.release == NULL) { /* end of stream */
      exit_code = 0;
      break;
    }
    for (int64_t r = 0; r < batch.length; r++) {
      for (int64_t c = 0; c < batch.n_children; c++) {
        if (c) putchar('\t');
        print_cell(schema.children[c], batch.children[c], r);
      }
      putchar('\n');
    }
    rows += batch.length;
    batch.release(&batch);
  }
  printf("(%" PRId64 " rows)\n", rows);
  schema.release(&schema);
  /* Releasing the stream records the query's completion on the audit trail. */
  stream.release(&stream);
done:
  gs_session_close(session); /* NULL is fine */
  gs_engine_close(engine);
  return exit_code;
}
