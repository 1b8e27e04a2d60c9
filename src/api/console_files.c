/*
 * console_files: the console's files in memory. See console_files.h.
 */
#include "api/console_files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/errors.h"

/* The files kohaku serves from the charting library, under "vendor/". */
static const char *const vendor_files[] = {"dygraph.min.js", "dygraph.min.css"};

#define MAX_FILE (8u << 20)

static const char *type_of(const char *name)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return NULL;
}

static int read_file(const char *path, char **data, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return KH_EIO;
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || st.st_size < 0 || (size_t)st.st_size > MAX_FILE) {
        fclose(fp);
        return KH_EIO;
    }
    *len = (size_t)st.st_size;
    *data = malloc(*len ? *len : 1);
    int rc = *data == NULL ? KH_ENOMEM : fread(*data, 1, *len, fp) == *len ? 0 : KH_EIO;
    fclose(fp);
    if (rc != 0) {
        free(*data);
        *data = NULL;
    }
    return rc;
}

static int add(struct kh_console_files *f, const char *name, const char *path, const char *type)
{
    struct kh_console_file *p = realloc(f->files, (f->n + 1) * sizeof(*p));
    if (p == NULL)
        return KH_ENOMEM;
    f->files = p;
    struct kh_console_file *nf = &f->files[f->n];
    *nf = (struct kh_console_file){.name = strdup(name), .type = type};
    if (nf->name == NULL)
        return KH_ENOMEM;
    int rc = read_file(path, &nf->data, &nf->len);
    if (rc != 0) {
        free(nf->name);
        return rc;
    }
    f->n++;
    return 0;
}

static int load_dir(struct kh_console_files *f, const char *dir, const char **err)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        *err = kh_errf("console_dir: %s: %s", dir, strerror(errno));
        return KH_EIO;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        const char *type = type_of(e->d_name);
        if (e->d_name[0] == '.' || type == NULL)
            continue;
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        rc = add(f, e->d_name, path, type);
        if (rc != 0)
            *err = kh_errf("console_dir: %s: cannot read", path);
    }
    closedir(d);
    return rc;
}

int kh_console_files_load(struct kh_console_files *f, const char *dir, const char *vendor_dir,
                          const char **missing, const char **err)
{
    *f = (struct kh_console_files){0};
    *missing = NULL;
    int rc = load_dir(f, dir, err);
    for (size_t i = 0; rc == 0 && i < sizeof(vendor_files) / sizeof(vendor_files[0]); i++) {
        char path[4096], name[128];
        snprintf(path, sizeof(path), "%s/%s", vendor_dir, vendor_files[i]);
        snprintf(name, sizeof(name), "vendor/%s", vendor_files[i]);
        int vrc = add(f, name, path, type_of(vendor_files[i]));
        if (vrc == KH_ENOMEM)
            rc = vrc;
        else if (vrc != 0 && *missing == NULL)
            *missing = kh_errf("%s", path);
    }
    if (rc == KH_ENOMEM)
        *err = "console: out of memory reading its files";
    if (rc != 0)
        kh_console_files_free(f);
    return rc;
}

void kh_console_files_free(struct kh_console_files *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->files[i].name);
        free(f->files[i].data);
    }
    free(f->files);
    *f = (struct kh_console_files){0};
}

const struct kh_console_file *kh_console_file(const struct kh_console_files *f,
                                              const char *name, size_t len)
{
    for (size_t i = 0; i < f->n; i++)
        if (strlen(f->files[i].name) == len && memcmp(f->files[i].name, name, len) == 0)
            return &f->files[i];
    return NULL;
}
