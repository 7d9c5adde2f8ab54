/* test_wait.c -- util.c's timed wait: cond_wait_ms() on a condition
 * variable made by cond_init_monotonic() times out after its time, not
 * before, returns at once for a non-positive time, and wakes on a signal.
 * That a wall-clock step leaves the timeout alone is exercised by the
 * e2e-faketime suite: a unit test cannot step the clock. */
#include "unit.h"

#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

struct waker {
    pthread_mutex_t *mu;
    pthread_cond_t *cv;
    int *flag;
};

static void *wake_later(void *arg)
{
    struct waker *w = arg;
    struct timespec ts = {0, 30 * 1000000L};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(w->mu);
    *w->flag = 1;
    pthread_cond_signal(w->cv);
    pthread_mutex_unlock(w->mu);
    return NULL;
}

static void test_cond_wait_ms(void **state)
{
    (void)state;
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    assert_int_equal(cond_init_monotonic(&cv), 0);
    pthread_mutex_lock(&mu);

    /* nothing to wait: ETIMEDOUT at once */
    int64_t t0 = time_mono_ms();
    assert_int_equal(cond_wait_ms(&cv, &mu, 0), ETIMEDOUT);
    assert_int_equal(cond_wait_ms(&cv, &mu, -5), ETIMEDOUT);
    assert_true(time_mono_ms() - t0 < 50);

    /* nobody signals: ETIMEDOUT after the time, not before (a spurious
     * wakeup returns 0 early, so wait again for what is left) */
    t0 = time_mono_ms();
    int rc;
    while ((rc = cond_wait_ms(&cv, &mu, 80 - (time_mono_ms() - t0))) == 0)
        ;
    assert_int_equal(rc, ETIMEDOUT);
    int64_t took = time_mono_ms() - t0;
    assert_true(took >= 79); /* ms granularity of time_mono_ms */
    assert_true(took < 5000);

    /* a signal wakes the waiter long before its timeout */
    int flag = 0;
    struct waker w = {&mu, &cv, &flag};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, wake_later, &w), 0);
    t0 = time_mono_ms();
    rc = 0;
    while (!flag && rc == 0)
        rc = cond_wait_ms(&cv, &mu, 20000);
    assert_int_equal(rc, 0);
    assert_true(flag);
    assert_true(time_mono_ms() - t0 < 10000);
    pthread_mutex_unlock(&mu);
    pthread_join(th, NULL);
    pthread_cond_destroy(&cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cond_wait_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
