//! The `ferricorn` binary: everything lives in the library; see `cli::main`.

fn main() {
    std::process::exit(ferricorn::cli::main());
}
