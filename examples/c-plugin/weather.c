/*
 * The design note's weather plugin, written in C against sdk/include/backworks.h
 * alone. It exports the same ABI as the Rust plugin, metadata record included,
 * and passes the same round-trip test (sdk/tests/abi).
 *
 * Build (Linux):   cc -std=c11 -shared -fPIC -I ../../sdk/include -o libweather_c.so weather.c
 * Build (Windows): x86_64-w64-mingw32-gcc -std=c11 -shared -I ../../sdk/include -o weather_c.dll weather.c
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backworks.h"

BACKWORKS_DECLARE_METADATA("weather-c", "1.0.0", "Weather API integration, in C");

enum { STATE_NEW, STATE_READY, STATE_STOPPED };
static atomic_int state = STATE_NEW;

/* The calling thread's last error, taken by last_error(). */
static _Thread_local int32_t error_code = BACKWORKS_STATUS_OK;
static _Thread_local char *error_message = NULL;

static char *copy(const char *text) {
    size_t len = strlen(text) + 1;
    char *out = malloc(len);
    if (out != NULL) {
        memcpy(out, text, len);
    }
    return out;
}

static void clear_error(void) {
    free(error_message);
    error_message = NULL;
    error_code = BACKWORKS_STATUS_OK;
}

static void set_error(int32_t code, const char *hook, const char *why) {
    char buffer[256];
    clear_error();
    snprintf(buffer, sizeof buffer, "`%s` %s", hook, why);
    error_code = code;
    error_message = copy(buffer);
}

/* 1 when the plugin is initialized and not shut down; else sets the error. */
static int ready(const char *hook) {
    int now = atomic_load(&state);
    if (now == STATE_READY) {
        return 1;
    }
    set_error(BACKWORKS_STATUS_INVALID_STATE, hook,
              now == STATE_NEW ? "called but the plugin is not initialized"
                               : "called but the plugin is shut down");
    return 0;
}

static int32_t initialize(const char *config) {
    int expected = STATE_NEW;
    clear_error();
    if (config == NULL) {
        set_error(BACKWORKS_STATUS_INVALID_INPUT, "initialize", "argument `config` is NULL");
        return BACKWORKS_STATUS_INVALID_INPUT;
    }
    if (!atomic_compare_exchange_strong(&state, &expected, STATE_READY)) {
        set_error(BACKWORKS_STATUS_INVALID_STATE, "initialize",
                  expected == STATE_READY ? "called but the plugin is already initialized"
                                          : "called but the plugin is shut down");
        return BACKWORKS_STATUS_INVALID_STATE;
    }
    return BACKWORKS_STATUS_OK;
}

static int32_t shutdown(void) {
    int expected = STATE_READY;
    clear_error();
    if (!atomic_compare_exchange_strong(&state, &expected, STATE_STOPPED)) {
        set_error(BACKWORKS_STATUS_INVALID_STATE, "shutdown",
                  expected == STATE_NEW ? "called but the plugin is not initialized"
                                        : "called but the plugin is shut down");
        return BACKWORKS_STATUS_INVALID_STATE;
    }
    return BACKWORKS_STATUS_OK;
}

static int32_t health_check(void) {
    clear_error();
    return ready("health_check") ? BACKWORKS_STATUS_OK : BACKWORKS_STATUS_INVALID_STATE;
}

static const char *before_request(const char *request) {
    clear_error();
    if (!ready("before_request")) {
        return NULL;
    }
    if (request == NULL) {
        set_error(BACKWORKS_STATUS_INVALID_INPUT, "before_request", "argument `request` is NULL");
    }
    return NULL; /* continue */
}

static const char *after_response(const char *exchange) {
    clear_error();
    if (!ready("after_response")) {
        return NULL;
    }
    if (exchange == NULL) {
        set_error(BACKWORKS_STATUS_INVALID_INPUT, "after_response", "argument `exchange` is NULL");
    }
    return NULL; /* keep the response */
}

static const char *process_endpoint(const char *endpoint, const char *method, const char *data) {
    clear_error();
    if (!ready("process_endpoint")) {
        return NULL;
    }
    if (endpoint == NULL || method == NULL || data == NULL) {
        set_error(BACKWORKS_STATUS_INVALID_INPUT, "process_endpoint", "an argument is NULL");
        return NULL;
    }
    if (strcmp(endpoint, "/weather") == 0 && strcmp(method, "GET") == 0) {
        const char *body = copy("{\"temperature\":25,\"humidity\":60}");
        if (body == NULL) {
            set_error(BACKWORKS_STATUS_PLUGIN_ERROR, "process_endpoint", "out of memory");
        }
        return body;
    }
    return NULL; /* not handled */
}

static void free_string(const char *text) {
    free((void *)text);
}

static const char *last_error(int32_t *code) {
    const char *message = error_message;
    if (code != NULL) {
        *code = error_code;
    }
    error_message = NULL;
    error_code = BACKWORKS_STATUS_OK;
    return message;
}

PluginInfo plugin_info(void) {
    PluginInfo info = {
        "weather", "1.0.0", "Weather API integration", BACKWORKS_ABI_VERSION,
        (uint32_t)sizeof(PluginInfo),
    };
    return info;
}

PluginVTable plugin_vtable(void) {
    PluginVTable vtable = {
        initialize,     shutdown,         health_check, before_request,
        after_response, process_endpoint, free_string,  last_error,
    };
    return vtable;
}
