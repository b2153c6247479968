//! The `ferricorn` binary: everything lives in the library; see `cli::main`.

// Rust-side allocations on the request path (read buffers, parsed heads, response chunks)
// go through mimalloc: fewer instructions per malloc/free than glibc's allocator. Python
// objects keep CPython's own allocator.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(ferricorn::cli::main());
}
