//! The allocators: mimalloc for Rust's allocations, and how much address space both
//! allocators reserve, decided before anything allocates (for the binary and for the wheel's
//! extension module alike).

use std::ffi::{c_int, c_long};

// Rust-side allocations on the request path (read buffers, response chunks) go through
// mimalloc: fewer instructions per malloc/free than glibc's allocator. Python objects keep
// CPython's own allocator (glibc's malloc underneath). Declared in the library so that the
// binary and the wheel's extension module both use it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Runs before Rust's runtime starts (which already allocates), like every `.init_array`
// function: the first mimalloc arena is reserved on the first allocation. In the wheel it runs
// when the interpreter loads the extension module, before any of ferricorn's code; the binary
// registers the same function again from `main.rs` (an rlib's unreferenced static may be left
// out of the link; running it twice changes nothing).
#[used]
#[unsafe(link_section = ".init_array")]
static RESERVE_LESS: extern "C" fn() = reserve_less;

// mimalloc's option API (in the static library the `mimalloc` crate links); `mi_option_t` is a
// C enum.
unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_arena_reserve` in mimalloc 3 (`include/mimalloc.h`): address space reserved per
/// arena, in KiB.
const MI_OPTION_ARENA_RESERVE: c_int = 23;
/// Its default (1 GiB), which identifies the option before it is changed.
const MI_ARENA_RESERVE_DEFAULT_KIB: c_long = 1024 * 1024;
/// What ferricorn reserves instead: mimalloc's smallest arena; more arenas follow as needed.
const ARENA_RESERVE_KIB: c_long = 32 * 1024;
/// glibc arenas: the main one only. Every thread that calls malloc would otherwise get an arena
/// of its own (up to 8 per core), each reserving 64 MiB. Python allocates under the GIL, and
/// ferricorn's own threads allocate through mimalloc, so more arenas buy little; a C extension
/// that allocates in many threads without the GIL contends on one lock (set `MALLOC_ARENA_MAX`
/// to change this).
const GLIBC_ARENAS: c_int = 1;

/// glibc's heap: memory freed at its top is kept up to this much, not handed back with `brk`.
/// Python allocates every object over 512 bytes with glibc's malloc, so a request body or a
/// response of 64 KiB was a fresh allocation at the top of the heap, freed after the request;
/// with glibc's default (128 KiB, unchanged by its dynamic rule for allocations that never
/// reach the mmap threshold) the heap shrank after nearly every such request and grew again at
/// the next, and the worker zero-filled 16 fresh pages per 64 KiB. Measured on bench/'s echo app
/// (POST 64 KiB, echoed): 72–96 → 47–54 µs of worker CPU per request, for 1–2 MiB more RSS.
/// Twice the mmap threshold below, as glibc's dynamic rule sets it.
const GLIBC_TRIM_THRESHOLD: c_int = 8 << 20;
/// Allocations from this size on are mmapped (and unmapped when freed). Setting the trim
/// threshold turns off glibc's dynamic mmap threshold, which starts at 128 KiB and rises (up to
/// 32 MiB) as large blocks are freed; a fixed 4 MiB keeps body-sized buffers on the heap.
const GLIBC_MMAP_THRESHOLD: c_int = 4 << 20;

/// An idle worker reserved 1.1 GiB of address space: mimalloc's first arena (1 GiB, reserved
/// before any request) and 64 MiB per Python thread in glibc. Under `ulimit -v` (`RLIMIT_AS`
/// counts reservations) the app ran out of memory long before it used any. Both allocators are
/// told to reserve less, unless the user configured them (`MIMALLOC_ARENA_RESERVE`,
/// `MALLOC_ARENA_MAX`); glibc's heap is also told to keep what it frees at its top (see
/// [`GLIBC_TRIM_THRESHOLD`]) unless `MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_` or
/// `GLIBC_TUNABLES` is set. Runs before `main` (see [`RESERVE_LESS`]).
pub extern "C" fn reserve_less() {
    // SAFETY: getenv only reads the environment (nothing writes it before `main`); mimalloc's
    // documented option calls, made while the process has one thread (options may be set
    // before or after mimalloc's own initialisation); mallopt only changes glibc's parameters.
    // The mimalloc option is only changed when it holds the default of the option we mean, so a
    // mimalloc whose enum numbering differs is left as it is.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_RESERVE".as_ptr()).is_null()
            && mi_option_get(MI_OPTION_ARENA_RESERVE) == MI_ARENA_RESERVE_DEFAULT_KIB
        {
            mi_option_set(MI_OPTION_ARENA_RESERVE, ARENA_RESERVE_KIB);
        }
        if libc::getenv(c"MALLOC_ARENA_MAX".as_ptr()).is_null() {
            libc::mallopt(libc::M_ARENA_MAX, GLIBC_ARENAS);
        }
        if libc::getenv(c"MALLOC_TRIM_THRESHOLD_".as_ptr()).is_null()
            && libc::getenv(c"MALLOC_MMAP_THRESHOLD_".as_ptr()).is_null()
            && libc::getenv(c"GLIBC_TUNABLES".as_ptr()).is_null()
        {
            libc::mallopt(libc::M_MMAP_THRESHOLD, GLIBC_MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, GLIBC_TRIM_THRESHOLD);
        }
    }
}
