/*
 * backworks.h: the Backworks plugin ABI, v1, for plugins written in C (or
 * anything that speaks C). The contract, byte for byte: docs/abi.md.
 *
 * A plugin library exports three symbols:
 *   - backworks_plugin_metadata: a BackworksMetadataRecord in section .bwmeta
 *     (__DATA,__bwmeta on Mach-O); declare it with BACKWORKS_DECLARE_METADATA;
 *   - plugin_info():   returns PluginInfo by value;
 *   - plugin_vtable(): returns PluginVTable by value (ABI 1.0), or
 *     PluginVTableV1_1 (ABI 1.1: define BACKWORKS_PLUGIN_ABI_MINOR as 1
 *     before including this header), or PluginVTableV1_2 (ABI 1.2, request
 *     hooks driven as futures: BACKWORKS_PLUGIN_ABI_MINOR 2).
 *
 * BACKWORKS_DECLARE_METADATA is for C; from C++, declare the record in a C
 * file of the library.
 */
#ifndef BACKWORKS_H
#define BACKWORKS_H

/* Generated from sdk/abi/src/lib.rs by cbindgen (see sdk/cbindgen.toml). Do not edit. */

#include <stdint.h>

/*
 The ABI version of this contract: written into every plugin's metadata
 record and [`PluginInfo`], and the only version a host built with it loads.
 It is the ABI's *major* version: it changes only when a change is not an
 append (see [`ABI_MINOR`]).
 */
#define BACKWORKS_ABI_VERSION 1

/*
 The newest minor revision of ABI v1 this contract defines: 2, "ABI 1.2"
 (1.1 plus the request hooks driven as futures, [`PluginVTableV1_2`]; 1.1
 added `initialize_with_host` and [`HostServices`]). A minor revision
 only appends vtable entries; a host loads plugins of every minor
 revision of its major version, older or newer (the entries it does not
 know are never called).
 */
#define BACKWORKS_ABI_MINOR 2

/*
 The most vtable entries a host reads from a plugin of a newer minor
 revision than it knows; a larger table is refused.
 */
#define BACKWORKS_MAX_VTABLE_ENTRIES 64

/*
 Written in the target's byte order; tells a reader the record's order.
 */
#define BACKWORKS_BYTE_ORDER_MARK 168496141

/*
 Status code: the hook succeeded.
 */
#define BACKWORKS_STATUS_OK 0

/*
 Status code: the plugin's hook returned an error.
 */
#define BACKWORKS_STATUS_PLUGIN_ERROR 1

/*
 Status code: the hook panicked; the panic was caught at the boundary.
 */
#define BACKWORKS_STATUS_PANIC 2

/*
 Status code: an argument was NULL, not UTF-8, or not the expected JSON.
 */
#define BACKWORKS_STATUS_INVALID_INPUT 3

/*
 Status code: the hook was called in the wrong lifecycle state (before
 `initialize`, after `shutdown`, or `initialize` twice).
 */
#define BACKWORKS_STATUS_INVALID_STATE 4

/*
 Status code (request hooks only: `before_request`, `after_response`,
 `process_endpoint`): the plugin does not implement this hook, and the
 host may stop calling it. The call itself counts as a no-op (continue,
 keep the response, not handled). The SDK reports it for hooks left to
 the trait's default.
 */
#define BACKWORKS_STATUS_NOT_IMPLEMENTED 5

/*
 `call_start`'s hook number (ABI 1.2): `before_request`; its first
 argument is the request as JSON, the other two are ignored.
 */
#define BACKWORKS_HOOK_BEFORE_REQUEST 0

/*
 `call_start`'s hook number: `process_endpoint`, with its three
 arguments (endpoint, method, data).
 */
#define BACKWORKS_HOOK_PROCESS_ENDPOINT 1

/*
 `call_start`'s hook number: `after_response`; its first argument is the
 exchange as JSON, the other two are ignored.
 */
#define BACKWORKS_HOOK_AFTER_RESPONSE 2

/*
 What `call_poll` returns (ABI 1.2): the call waits; the plugin has kept
 a clone of the waker and wakes it when the call can go on.
 */
#define BACKWORKS_POLL_PENDING 0

/*
 What `call_poll` returns: the call is finished (with its result or a
 failure); take it with `call_finish`.
 */
#define BACKWORKS_POLL_READY 1

/*
 Log level passed to [`HostServices::log`]: an error.
 */
#define BACKWORKS_LOG_ERROR 1

/*
 Log level: a warning.
 */
#define BACKWORKS_LOG_WARN 2

/*
 Log level: information.
 */
#define BACKWORKS_LOG_INFO 3

/*
 Log level: debugging detail.
 */
#define BACKWORKS_LOG_DEBUG 4

/*
 Log level: tracing detail.
 */
#define BACKWORKS_LOG_TRACE 5

/*
 The largest declaration a record carries, in bytes of JSON.
 */
#define BACKWORKS_MAX_CAPABILITIES_SIZE (16 * 1024)

/*
 Offset of the extension's two words (`capabilities_offset`,
 `capabilities_size`) in a record: right after the 512 bytes of v1.
 */
#define BACKWORKS_EXTENSION_OFFSET 512

/*
 Size of a record with the extension and no declaration.
 */
#define BACKWORKS_EXTENDED_RECORD_SIZE (BACKWORKS_EXTENSION_OFFSET + 8)

/*
 What `plugin_info` returns: the plugin's own name, version and
 description, as static NUL-terminated UTF-8 strings owned by the plugin
 (valid while the library is loaded; never freed by the host).

 The first three fields are those of the design note, in its order.
 */
typedef struct PluginInfo {
  /*
   The plugin's name (`BackworksPlugin::name`).
   */
  const char *name;
  /*
   The plugin's version (`BackworksPlugin::version`).
   */
  const char *version;
  /*
   One line about the plugin (`BackworksPlugin::description`).
   */
  const char *description;
  /*
   [`ABI_VERSION`] of the plugin.
   */
  uint32_t abi_version;
  /*
   `sizeof(PluginInfo)` in the plugin.
   */
  uint32_t struct_size;
} PluginInfo;

/*
 What `plugin_vtable` returns: the hooks, then the two ABI helpers.

 The first six fields are those of the design note, in its order. Every
 string a hook returns is owned by the plugin and must be released with
 `free_string`; a NULL return means "nothing" unless `last_error` then
 reports an error. See `docs/abi.md` for each entry's contract.

 Every entry must be a function: a host refuses a table with a NULL entry,
 naming it, before it calls anything in the table. (In Rust each entry is
 an `Option`, the same bytes as the C pointer, so a NULL written by a C
 plugin is `None`, never an invalid function pointer.)
 */
typedef struct PluginVTable {
  /*
   `initialize(config_json)`: status code.
   */
  int32_t (*initialize)(const char*);
  /*
   `shutdown()`: status code.
   */
  int32_t (*shutdown)(void);
  /*
   `health_check()`: status code; `0` is healthy.
   */
  int32_t (*health_check)(void);
  /*
   `before_request(request_json)`: NULL to continue, else a
   [`RequestAction`] as JSON.
   */
  const char *(*before_request)(const char*);
  /*
   `after_response(exchange_json)`: NULL to keep the response, else the
   replacement [`HttpResponse`] as JSON.
   */
  const char *(*after_response)(const char*);
  /*
   `process_endpoint(endpoint, method, data)`: NULL when not handled,
   else the response body.
   */
  const char *(*process_endpoint)(const char*, const char*, const char*);
  /*
   Releases a string returned by any entry of this table. NULL is a no-op.
   */
  void (*free_string)(const char*);
  /*
   Takes the calling thread's last error: writes its status code to
   `*code` (when `code` is not NULL) and returns its message (release it
   with `free_string`), or writes `0` and returns NULL when there is none.
   */
  const char *(*last_error)(int32_t*);
} PluginVTable;

/*
 What the host offers a plugin (ABI 1.1), passed to
 `initialize_with_host`.

 The struct grows by appending fields: `struct_size` says how many bytes
 of it the host filled, and a plugin reads a field only when
 `struct_size` covers it. The struct, `context` and every function stay
 valid for as long as the plugin's library is loaded (hosts never unload
 libraries); each function may be called from any thread, concurrently,
 and never calls back into the plugin.
 */
typedef struct BackworksHostServices {
  /*
   `sizeof(HostServices)` in the host.
   */
  uint32_t struct_size;
  /*
   Zero; keeps `context` aligned on every target.
   */
  uint32_t reserved;
  /*
   The host's opaque value, passed back as every function's first
   argument.
   */
  void *context;
  /*
   `log_enabled(context, level, target)`: non-zero when the host would
   keep an event of `level` (`LOG_ERROR`..`LOG_TRACE`) from `target` (a
   NUL-terminated UTF-8 string, the plugin's module path or any name),
   so the plugin can skip formatting the others.
   */
  int32_t (*log_enabled)(void*, uint32_t, const char*);
  /*
   `log(context, level, target, message, fields_json)`: one event into
   the host's log. `message` is NUL-terminated UTF-8; `fields_json` is
   NULL or a JSON object of the event's other fields. The host copies
   what it keeps; the strings only need to live for the call.
   */
  void (*log)(void*, uint32_t, const char*, const char*, const char*);
} BackworksHostServices;

/*
 What `plugin_vtable` returns in ABI 1.1: the table of 1.0, then the
 entries 1.1 appends (`docs/abi.md`, "Versioning").

 A plugin built for 1.1 records `vtable_size = sizeof(PluginVTableV1_1)`
 and minor revision 1 ([`metadata::FLAG_ABI_MINOR_SHIFT`]). Every entry
 must be a function.
 */
typedef struct PluginVTableV1_1 {
  /*
   The entries of ABI 1.0, unchanged.
   */
  struct PluginVTable v1_0;
  /*
   `initialize_with_host(config_json, host)`: status code. Called by a
   1.1 host *instead of* `initialize` (same contract, once, first), with
   the [`HostServices`] the plugin may use from then on, from any thread,
   for as long as the library is loaded.
   */
  int32_t (*initialize_with_host)(const char*, const struct BackworksHostServices*);
} PluginVTableV1_1;

/*
 A host's waker, as a plugin receives it in `call_start` and `call_poll`
 (ABI 1.2): the host's value and three functions over it. The plugin
 wakes it when a waiting call can go on (from any thread, at any time,
 also after the call was finished or dropped), clones it to keep it past
 the call it was passed to, and drops every clone it made exactly once.
 The struct passed by pointer lives only for the call; the plugin never
 drops it (only its clones).
 */
typedef struct BackworksHostWaker {
  /*
   The host's value, passed to every function.
   */
  const void *data;
  /*
   `clone(data)`: a new waker for the same task, owned by the caller,
   who drops it with its own `drop`.
   */
  struct BackworksHostWaker (*clone)(const void*);
  /*
   `wake(data)`: the task should be polled again. Does not release the
   waker.
   */
  void (*wake)(const void*);
  /*
   `drop(data)`: releases this waker (a clone); never called on the
   struct the host passed.
   */
  void (*drop)(const void*);
} BackworksHostWaker;

/*
 What `plugin_vtable` returns in ABI 1.2: the table of 1.1, then four
 entries through which the host drives a request hook as a future
 (`docs/abi.md`, section 5b). Every entry must be a function.

 A call: `call_start` runs the hook until it first waits. When it
 finished, it returns what the synchronous hook returns (a string, or NULL
 and maybe an error in `last_error`) and writes NULL to `*call`; when it
 waits, it writes a call handle to `*call` (and returns NULL). The host
 then calls `call_poll(handle, waker)` each time the plugin woke the
 waker, until it returns [`POLL_READY`], and then `call_finish(handle)`,
 which returns the result as the synchronous hook would and frees the
 handle; or `call_drop(handle)` at any time to cancel the call.
 */
typedef struct PluginVTableV1_2 {
  /*
   The entries of ABI 1.1, unchanged.
   */
  struct PluginVTableV1_1 v1_1;
  /*
   `call_start(hook, a, b, c, waker, call)`: starts request hook `hook`
   (`HOOK_BEFORE_REQUEST`, `HOOK_PROCESS_ENDPOINT`,
   `HOOK_AFTER_RESPONSE`) with the synchronous hook's arguments (`b` and
   `c` only for `process_endpoint`, else ignored), and polls it once
   with `waker`. Finished: writes NULL to `*call` and returns what the
   synchronous hook returns; waiting: writes the call's handle to
   `*call` and returns NULL.
   */
  const char *(*call_start)(uint32_t,
                            const char*,
                            const char*,
                            const char*,
                            const struct BackworksHostWaker*,
                            void**);
  /*
   `call_poll(call, waker)`: polls a waiting call with `waker` (which
   the plugin clones if it keeps it): [`POLL_PENDING`] or
   [`POLL_READY`].
   */
  int32_t (*call_poll)(void*, const struct BackworksHostWaker*);
  /*
   `call_finish(call)`: the result of a call `call_poll` reported
   ready, as the synchronous hook returns it (a string, or NULL and
   maybe an error in the calling thread's `last_error`); frees the
   call.
   */
  const char *(*call_finish)(void*);
  /*
   `call_drop(call)`: cancels and frees a call that was not finished
   (the plugin drops its future). NULL does nothing.
   */
  void (*call_drop)(void*);
} PluginVTableV1_2;

/*
 The metadata record, exported as `backworks_plugin_metadata` and placed in
 the `.bwmeta` section (`__DATA,__bwmeta` on Mach-O).

 Plain bytes and integers only (no pointers), so it reads the same from
 the file as from memory. Strings are UTF-8, NUL-terminated and
 zero-padded to their slot. Integers are in the target's byte order, which
 `byte_order` tells. Byte layout: `docs/abi.md`.
 */
typedef struct BackworksMetadataRecord {
  /*
   [`METADATA_MAGIC`].
   */
  uint8_t magic[8];
  /*
   [`BYTE_ORDER_MARK`].
   */
  uint32_t byte_order;
  /*
   `sizeof(MetadataRecord)`: 512 in v1.
   */
  uint32_t record_size;
  /*
   [`ABI_VERSION`] the plugin was built against.
   */
  uint32_t abi_version;
  /*
   `sizeof(PluginInfo)` in the plugin.
   */
  uint32_t info_size;
  /*
   `sizeof(PluginVTable)` in the plugin.
   */
  uint32_t vtable_size;
  /*
   Flag bits (`metadata::FLAG_*`); bits 16 to 23 hold the ABI minor
   revision (`metadata::FLAG_ABI_MINOR_SHIFT`).
   */
  uint32_t flags;
  /*
   SDK (or C header) version.
   */
  uint8_t sdk_version[32];
  /*
   Package name.
   */
  uint8_t name[64];
  /*
   Package version.
   */
  uint8_t version[64];
  /*
   Target triple.
   */
  uint8_t target[64];
  /*
   Package description, truncated to 255 bytes on a character boundary.
   */
  uint8_t description[256];
} BackworksMetadataRecord;





/* ---- Declaring a plugin (hand-written part, kept in sdk/cbindgen.toml) ---- */

/* Version of the SDK this header belongs to. */
#define BACKWORKS_SDK_VERSION "0.1.0"

#if defined(_WIN32) || defined(__CYGWIN__)
#  define BACKWORKS_EXPORT __declspec(dllexport)
#else
#  define BACKWORKS_EXPORT __attribute__((visibility("default")))
#endif

#if defined(__APPLE__)
#  define BACKWORKS_METADATA_SECTION __attribute__((section("__DATA,__bwmeta"), used))
#else
#  define BACKWORKS_METADATA_SECTION __attribute__((section(".bwmeta"), used))
#endif

/* The target triple written into the metadata record; define it yourself
 * before including this header when the guess below is wrong. */
#ifndef BACKWORKS_TARGET
#  if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
#    define BACKWORKS_TARGET "x86_64-unknown-linux-gnu"
#  elif defined(__x86_64__) && defined(__linux__)
#    define BACKWORKS_TARGET "x86_64-unknown-linux-musl"
#  elif defined(__aarch64__) && defined(__linux__) && defined(__GLIBC__)
#    define BACKWORKS_TARGET "aarch64-unknown-linux-gnu"
#  elif defined(__aarch64__) && defined(__linux__)
#    define BACKWORKS_TARGET "aarch64-unknown-linux-musl"
#  elif defined(__x86_64__) && defined(__MINGW64__)
#    define BACKWORKS_TARGET "x86_64-pc-windows-gnu"
#  elif defined(_M_X64) && defined(_MSC_VER)
#    define BACKWORKS_TARGET "x86_64-pc-windows-msvc"
#  elif defined(__x86_64__) && defined(__APPLE__)
#    define BACKWORKS_TARGET "x86_64-apple-darwin"
#  elif defined(__aarch64__) && defined(__APPLE__)
#    define BACKWORKS_TARGET "aarch64-apple-darwin"
#  else
#    error "backworks.h: unknown target; #define BACKWORKS_TARGET \"<rust target triple>\" before including it"
#  endif
#endif

#ifdef __cplusplus
#  define BACKWORKS_STATIC_ASSERT static_assert
#else
#  define BACKWORKS_STATIC_ASSERT _Static_assert
#endif

BACKWORKS_STATIC_ASSERT(sizeof(BackworksMetadataRecord) == 512, "BackworksMetadataRecord must be 512 bytes");

/* The ABI revision this plugin is written for: 1.BACKWORKS_PLUGIN_ABI_MINOR.
 * 0 (the default): ABI 1.0, plugin_vtable returns a PluginVTable. 1: ABI 1.1,
 * plugin_vtable returns a PluginVTableV1_1, whose initialize_with_host
 * receives the host's services (BackworksHostServices). 2: ABI 1.2,
 * plugin_vtable returns a PluginVTableV1_2, whose call_* entries let the host
 * drive request hooks as futures (docs/abi.md, section 5b). Hosts load all
 * three. Define it before including this header. */
#ifndef BACKWORKS_PLUGIN_ABI_MINOR
#  define BACKWORKS_PLUGIN_ABI_MINOR 0
#endif
#if BACKWORKS_PLUGIN_ABI_MINOR == 0
typedef PluginVTable BackworksPluginTable;
#elif BACKWORKS_PLUGIN_ABI_MINOR == 1
typedef PluginVTableV1_1 BackworksPluginTable;
#elif BACKWORKS_PLUGIN_ABI_MINOR == 2
typedef PluginVTableV1_2 BackworksPluginTable;
#else
#  error "backworks.h: BACKWORKS_PLUGIN_ABI_MINOR must be 0 (ABI 1.0), 1 (ABI 1.1) or 2 (ABI 1.2)"
#endif

/* The checks and the v1 record both declaring macros share; RECORD_SIZE is
 * the size of the whole record, extension included. */
#define BACKWORKS_CHECK_METADATA_(NAME, VERSION, DESCRIPTION)                               \
    BACKWORKS_STATIC_ASSERT(sizeof(NAME) > 1 && sizeof(NAME) <= 64, "plugin name: 1..=63 bytes"); \
    BACKWORKS_STATIC_ASSERT(sizeof(VERSION) > 1 && sizeof(VERSION) <= 64, "plugin version: 1..=63 bytes"); \
    BACKWORKS_STATIC_ASSERT(sizeof(DESCRIPTION) <= 256, "plugin description: at most 255 bytes")
#define BACKWORKS_METADATA_RECORD_(NAME, VERSION, DESCRIPTION, RECORD_SIZE)                 \
    {                                                                                        \
        { 'B', 'W', 'K', 'S', 'P', 'L', 'U', 'G' },                                          \
        BACKWORKS_BYTE_ORDER_MARK,                                                           \
        (uint32_t)(RECORD_SIZE),                                                             \
        BACKWORKS_ABI_VERSION,                                                               \
        (uint32_t)sizeof(PluginInfo),                                                        \
        (uint32_t)sizeof(BackworksPluginTable),                                              \
        (uint32_t)BACKWORKS_PLUGIN_ABI_MINOR << 16, /* flags: the minor revision */          \
        BACKWORKS_SDK_VERSION,                                                               \
        NAME,                                                                                \
        VERSION,                                                                             \
        BACKWORKS_TARGET,                                                                    \
        DESCRIPTION,                                                                         \
    }

/* Declares the plugin's metadata record. NAME and VERSION: string literals of
 * 1 to 63 bytes; DESCRIPTION: a string literal of at most 255 bytes. Use it
 * once, at file scope, in one source file of the library. The plugin
 * declares no capabilities (the process tier's defaults apply). */
#define BACKWORKS_DECLARE_METADATA(NAME, VERSION, DESCRIPTION)                              \
    BACKWORKS_CHECK_METADATA_(NAME, VERSION, DESCRIPTION);                                   \
    BACKWORKS_EXPORT BACKWORKS_METADATA_SECTION                                              \
    const BackworksMetadataRecord backworks_plugin_metadata =                                \
        BACKWORKS_METADATA_RECORD_(NAME, VERSION, DESCRIPTION, sizeof(BackworksMetadataRecord))

/* Declares the plugin's metadata record with the capabilities it needs
 * (what a Rust plugin declares in [package.metadata.backworks.capabilities]):
 * CAPABILITIES_JSON is a string literal of the declaration's JSON, e.g.
 * "{\"network\":[\"api.example.com:443\"],\"env\":[\"LANG\"]}" (the form
 * `cargo backworks check --json` prints; a field left out is denied), 1 byte
 * to 16 KiB. Tools read and check it from the record; the host's process
 * tier enforces it. Use it instead of BACKWORKS_DECLARE_METADATA: once, at
 * file scope, in one source file of the library. The record is v1's 512
 * bytes, the extension's offset and size of the JSON, and the JSON with its
 * NUL, zero-padded to a multiple of 8 bytes. */
#define BACKWORKS_DECLARE_METADATA_WITH_CAPABILITIES(NAME, VERSION, DESCRIPTION, CAPABILITIES_JSON) \
    BACKWORKS_CHECK_METADATA_(NAME, VERSION, DESCRIPTION);                                   \
    BACKWORKS_STATIC_ASSERT(sizeof(CAPABILITIES_JSON) > 1 &&                                 \
                                sizeof(CAPABILITIES_JSON) - 1 <= BACKWORKS_MAX_CAPABILITIES_SIZE, \
                            "plugin capabilities: 1 byte to 16 KiB of JSON");                \
    typedef struct {                                                                         \
        BackworksMetadataRecord record;                                                      \
        uint32_t capabilities_offset;                                                        \
        uint32_t capabilities_size;                                                          \
        char capabilities[(sizeof(CAPABILITIES_JSON) + 7) / 8 * 8];                          \
    } BackworksDeclaredRecord;                                                               \
    BACKWORKS_STATIC_ASSERT(sizeof(BackworksDeclaredRecord) ==                               \
                                BACKWORKS_EXTENDED_RECORD_SIZE + (sizeof(CAPABILITIES_JSON) + 7) / 8 * 8, \
                            "BackworksDeclaredRecord must have no padding");                 \
    BACKWORKS_EXPORT BACKWORKS_METADATA_SECTION                                              \
    const BackworksDeclaredRecord backworks_plugin_metadata = {                              \
        BACKWORKS_METADATA_RECORD_(NAME, VERSION, DESCRIPTION, sizeof(BackworksDeclaredRecord)), \
        BACKWORKS_EXTENDED_RECORD_SIZE,                                                      \
        (uint32_t)(sizeof(CAPABILITIES_JSON) - 1),                                           \
        CAPABILITIES_JSON,                                                                   \
    }

#ifdef __cplusplus
extern "C" {
#endif

/* The two functions every plugin defines. */
BACKWORKS_EXPORT PluginInfo plugin_info(void);
BACKWORKS_EXPORT BackworksPluginTable plugin_vtable(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* BACKWORKS_H */
