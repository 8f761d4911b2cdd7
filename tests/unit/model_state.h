/*
 * model_state.h: for the virtio model tests: a model's own state (virtio_device_ops save and
 * load) through a real state stream, framed as one section the way the transport carries it.
 * Include after cmocka.h.
 */
#ifndef GODWIT_TESTS_MODEL_STATE_H
#define GODWIT_TESTS_MODEL_STATE_H

#include <string.h>

#include "migration/state.h"
#include "virtio/virtio.h"

#define MODEL_STATE_MAX 256u

/* Saves the model's state; returns the payload's length (copied into `out`). */
static inline size_t model_save(struct virtio_device *vdev, uint8_t out[MODEL_STATE_MAX])
{
    struct state_writer w;
    struct state_reader r;
    sw_init(&w);
    sw_begin(&w, "model", vdev->ops->state_version);
    vdev->ops->save(vdev, &w);
    sw_end(&w);
    assert_int_equal(sw_finish(&w), 0);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    const struct state_section *s = state_reader_find(&r, "model");
    assert_non_null(s);
    assert_true(s->len <= MODEL_STATE_MAX);
    size_t len = s->len;
    memcpy(out, s->data, len);
    state_reader_close(&r);
    sw_free(&w);
    return len;
}

/* Loads `len` payload bytes of `version`, checking the length as the transport does after
 * the model: returns the load's answer, or sc_finish()'s. */
static inline int model_load(struct virtio_device *vdev, const uint8_t *payload, size_t len,
                             uint32_t version)
{
    struct state_writer w;
    struct state_reader r;
    struct state_cursor c;
    sw_init(&w);
    sw_begin(&w, "model", version);
    sw_bytes(&w, payload, len);
    sw_end(&w);
    assert_int_equal(sw_finish(&w), 0);
    assert_int_equal(state_reader_open(&r, w.buf, w.len), 0);
    sc_init(&c, state_reader_find(&r, "model"));
    int ret = vdev->ops->load(vdev, &c, version);
    if (ret == 0)
        ret = sc_finish(&c);
    state_reader_close(&r);
    sw_free(&w);
    return ret;
}

#endif
