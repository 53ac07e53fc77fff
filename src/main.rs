//! The wagate binary.

fn main() {
    println!("wagate {}", env!("CARGO_PKG_VERSION"));
}
