/* test_google_budget.c -- the token bucket of the Google request budgets,
 * pure arithmetic over an injected clock (no time passes). */
#include "unit.h"

#include "provider/google/budget.h"

/* Takes as many tokens as the bucket gives at now_ms with reserve r. */
static int drain(struct google_bucket *b, int64_t now, double r)
{
    int n = 0;
    while (google_bucket_wait_ms(b, now, r) == 0 && n < 100000) {
        google_bucket_take(b);
        n++;
    }
    return n;
}

static void test_burst_then_rate(void **state)
{
    (void)state;
    struct google_bucket b;
    /* 600/min: burst of 100, then 500 more over the minute. */
    google_bucket_init(&b, 600, 1000);
    assert_true(drain(&b, 1000, 0) == 100);
    int64_t w = google_bucket_wait_ms(&b, 1000, 0);
    assert_true(w >= 1 && w <= 121);          /* 500/60000 per ms: one token in 120 ms */
    assert_true(drain(&b, 1000 + w, 0) == 1); /* and exactly then it is there */
}

static void test_window_bound(void **state)
{
    (void)state;
    struct google_bucket b;
    /* Any 60-second window holds at most per_minute: take greedily every
     * 10 ms for two minutes and count the densest window. */
    google_bucket_init(&b, 600, 0);
    static int64_t at[5000];
    int n = 0;
    for (int64_t t = 0; t <= 120000 && n < 5000; t += 10)
        for (int k = drain(&b, t, 0); k > 0 && n < 5000; k--)
            at[n++] = t;
    int worst = 0;
    for (int i = 0, j = 0; i < n; i++) {
        while (at[i] - at[j] >= 60000)
            j++;
        if (i - j + 1 > worst)
            worst = i - j + 1;
    }
    assert_true(worst <= 600);
    assert_true(worst >= 590); /* and the budget is actually usable */
}

static void test_reserve(void **state)
{
    (void)state;
    struct google_bucket b;
    /* The reserve: low priority stops with 10 tokens left, high takes them. */
    google_bucket_init(&b, 600, 0);
    assert_true(drain(&b, 0, 10) == 90);
    assert_true(google_bucket_wait_ms(&b, 0, 10) > 0);
    assert_true(drain(&b, 0, 0) == 10);

    /* A reserve as large as the bucket cannot starve low priority. */
    google_bucket_init(&b, 6, 0);
    assert_true(drain(&b, 0, 1000) == 1);

    /* The clock going backwards adds nothing. */
    google_bucket_init(&b, 600, 5000);
    drain(&b, 5000, 0);
    assert_true(google_bucket_wait_ms(&b, 0, 0) > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_rate),
        cmocka_unit_test(test_window_bound),
        cmocka_unit_test(test_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
