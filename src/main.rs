//! The `ferricorn` binary: everything lives in the library (see `cli::main`; the allocators in
//! `alloc`).

fn main() {
    std::process::exit(ferricorn::cli::main());
}

// `alloc::reserve_less` before anything allocates (see there).
#[used]
#[unsafe(link_section = ".init_array")]
static RESERVE_LESS: extern "C" fn() = ferricorn::alloc::reserve_less;
