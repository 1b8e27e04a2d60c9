/*
 * Unit tests of src/quality/emodel.c against hand-computed G.107 values: R at every default
 * (93.2062, G.107 7.7 says 93.2), Idd at the delay reference points, Ie,eff of G.711 with
 * concealment at 1/3/5/10 % loss, R and MOS end to end, Annex B's MOS points and its clamp,
 * the mouth-to-ear delay and the codec table.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "quality/emodel.h"

#define near(a, b, eps) assert_true(fabs((a) - (b)) < (eps))

static void test_defaults_give_93_2(void **state)
{
    const struct kh_emodel_codec *g711 = kh_emodel_codec("audio/PCMU");
    near(kh_emodel_r(g711, 0, 0), 93.2062, 1e-3);
    near(kh_emodel_mos(kh_emodel_r(g711, 0, 0)), 4.4094, 1e-3);
}

static void test_idd_reference_points(void **state)
{
    const double ta[] = {0, 100, 150, 200, 250, 300, 400, 500};
    const double idd[] = {0, 0, 0.1635, 3.0444, 8.9167, 14.7607, 24.0701, 30.6359};
    for (size_t i = 0; i < sizeof(ta) / sizeof(ta[0]); i++)
        near(kh_emodel_idd(ta[i]), idd[i], 1e-3);
}

static void test_ie_eff_g711_plc(void **state)
{
    const struct kh_emodel_codec *c = kh_emodel_codec("audio/PCMA");
    near(kh_emodel_ie_eff(c, 1, 1), 95.0 / 26.1, 1e-4);
    near(kh_emodel_ie_eff(c, 3, 1), 285.0 / 28.1, 1e-4);
    near(kh_emodel_ie_eff(c, 5, 1), 15.7807, 1e-3);
    near(kh_emodel_ie_eff(c, 10, 1), 27.0655, 1e-3);
    near(kh_emodel_ie_eff(c, 3, 2), 10.714, 1e-3); /* bursty loss hurts more */
    near(kh_emodel_ie_eff(c, 0, 1), 0, 1e-9);
    near(kh_emodel_ie_eff(c, -5, 1), 0, 1e-9); /* a negative count is no loss */
}

/* G.711 with concealment: (Ta ms, Ppl %) -> R, MOS, worked by hand from the equations. */
static void test_r_and_mos_end_to_end(void **state)
{
    static const struct {
        double ta, ppl, r, mos;
    } v[] = {
        {0, 1, 89.5664, 4.3282},   {0, 3, 83.0639, 4.1344},   {150, 0, 93.0427, 4.4062},
        {150, 1, 89.4028, 4.3241}, {150, 3, 82.9003, 4.1288}, {300, 0, 78.4455, 3.9639},
        {300, 1, 74.8057, 3.8135}, {300, 3, 68.3032, 3.5164},
    };
    const struct kh_emodel_codec *c = kh_emodel_codec("audio/pcmu");
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        double r = kh_emodel_r(c, v[i].ta, v[i].ppl);
        near(r, v[i].r, 2e-3);
        near(kh_emodel_mos(r), v[i].mos, 2e-3);
    }
}

static void test_mos_from_r(void **state)
{
    static const double r[] = {-5, 0, 20, 40, 50, 60, 70, 80, 90, 100, 120};
    static const double mos[] = {1, 1, 1.252, 2.064, 2.575, 3.100, 3.597, 4.024, 4.339, 4.5, 4.5};
    for (size_t i = 0; i < sizeof(r) / sizeof(r[0]); i++)
        near(kh_emodel_mos(r[i]), mos[i], 1e-3);
    for (double x = 0; x < 7; x += 0.25) /* the polynomial's dip below 1 is clamped */
        assert_true(kh_emodel_mos(x) >= 1);
    assert_true(kh_emodel_mos(NAN) == 1);
}

static void test_mouth_to_ear_and_codecs(void **state)
{
    const struct kh_emodel_codec *opus = kh_emodel_codec("audio/opus");
    assert_string_equal(opus->name, "opus");
    near(kh_emodel_mouth_to_ear(opus, 100, 40), 50 + 40 + 20 + 6.5, 1e-9);
    near(kh_emodel_mouth_to_ear(opus, NAN, NAN), 26.5, 1e-9); /* unknown parts count 0 */
    assert_string_equal(kh_emodel_codec("AUDIO/OPUS")->name, "opus");
    assert_string_equal(kh_emodel_codec("audio/PCMA")->name, "pcma");
    assert_string_equal(kh_emodel_codec("audio/red")->name, "opus");
    assert_string_equal(kh_emodel_codec(NULL)->name, "opus");
    /* RTT 100 + jitter buffer 40: Ta 116.5 ms at 1 % loss */
    near(kh_emodel_r(opus, kh_emodel_mouth_to_ear(opus, 100, 40), 1), 89.5659, 2e-3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_give_93_2),
        cmocka_unit_test(test_idd_reference_points),
        cmocka_unit_test(test_ie_eff_g711_plc),
        cmocka_unit_test(test_r_and_mos_end_to_end),
        cmocka_unit_test(test_mos_from_r),
        cmocka_unit_test(test_mouth_to_ear_and_codecs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
