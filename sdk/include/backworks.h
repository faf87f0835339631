/*
 * backworks.h: the Backworks plugin ABI, v1, for plugins written in C (or
 * anything that speaks C). The contract, byte for byte: docs/abi.md.
 *
 * A plugin library exports three symbols:
 *   - backworks_plugin_metadata: a BackworksMetadataRecord in section .bwmeta
 *     (__DATA,__bwmeta on Mach-O); declare it with BACKWORKS_DECLARE_METADATA;
 *   - plugin_info():   returns PluginInfo by value;
 *   - plugin_vtable(): returns PluginVTable by value.
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
 */
#define BACKWORKS_ABI_VERSION 1

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
   Flag bits (`metadata::FLAG_*`).
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

/* Declares the plugin's metadata record. NAME and VERSION: string literals of
 * 1 to 63 bytes; DESCRIPTION: a string literal of at most 255 bytes. Use it
 * once, at file scope, in one source file of the library. */
#define BACKWORKS_DECLARE_METADATA(NAME, VERSION, DESCRIPTION)                              \
    BACKWORKS_STATIC_ASSERT(sizeof(NAME) > 1 && sizeof(NAME) <= 64, "plugin name: 1..=63 bytes"); \
    BACKWORKS_STATIC_ASSERT(sizeof(VERSION) > 1 && sizeof(VERSION) <= 64, "plugin version: 1..=63 bytes"); \
    BACKWORKS_STATIC_ASSERT(sizeof(DESCRIPTION) <= 256, "plugin description: at most 255 bytes"); \
    BACKWORKS_EXPORT BACKWORKS_METADATA_SECTION                                              \
    const BackworksMetadataRecord backworks_plugin_metadata = {                              \
        { 'B', 'W', 'K', 'S', 'P', 'L', 'U', 'G' },                                          \
        BACKWORKS_BYTE_ORDER_MARK,                                                           \
        (uint32_t)sizeof(BackworksMetadataRecord),                                           \
        BACKWORKS_ABI_VERSION,                                                               \
        (uint32_t)sizeof(PluginInfo),                                                        \
        (uint32_t)sizeof(PluginVTable),                                                      \
        0,                                                                                   \
        BACKWORKS_SDK_VERSION,                                                               \
        NAME,                                                                                \
        VERSION,                                                                             \
        BACKWORKS_TARGET,                                                                    \
        DESCRIPTION,                                                                         \
    }

#ifdef __cplusplus
extern "C" {
#endif

/* The two functions every plugin defines. */
BACKWORKS_EXPORT PluginInfo plugin_info(void);
BACKWORKS_EXPORT PluginVTable plugin_vtable(void);

#ifdef __cplusplus
}  /* extern "C" */
#endif

#endif  /* BACKWORKS_H */
