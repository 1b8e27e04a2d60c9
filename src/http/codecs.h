/*
 * codecs: the two HTTP codecs, for kh_http_pick_codec (http.c). Each is the only user of its
 * protocol library: h1.c of http_parser, h2.c of nghttp2.
 */
#ifndef KH_CODECS_H
#define KH_CODECS_H

#include "net/server.h"

extern const struct kh_codec_ops kh_h1_codec;
extern const struct kh_codec_ops kh_h2_codec;

#endif
