/*
 * text: the rule every string kohaku keeps must pass, whichever parser read it: text that
 * PostgreSQL accepts in text and jsonb, that is strictly valid UTF-8 without U+0000. (yajl's
 * own check lets overlong forms, surrogates and code points past U+10FFFF through, and
 * decodes a lone "\udc00" escape into a surrogate.) Pure; any thread.
 */
#ifndef KH_TEXT_H
#define KH_TEXT_H

#include <stddef.h>

/* NULL when s[0, n) is fine, else the rule it breaks ("must not contain \u0000", "must be
 * valid UTF-8"), a string literal to put after the field's name. */
const char *kh_text_problem(const unsigned char *s, size_t n);

#endif
