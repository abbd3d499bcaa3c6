//! Writes a generated scale spec to stdout, for timing or counting the
//! instructions of whole commands on it (`bench/scale-instructions.sh`):
//! `cargo run -p shufflekit-test-support --example scale_spec -- relu 100000`.

use shufflekit_test_support::scale::{self, Layout};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: scale_spec relu|conv|named|repeat NODES";
    let [layout, nodes] = &args[..] else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let Some(layout) = Layout::ALL.into_iter().find(|l| l.name() == layout) else {
        eprintln!("unknown layout `{layout}`; {usage}");
        std::process::exit(2);
    };
    let Ok(nodes) = nodes.parse::<usize>() else {
        eprintln!("NODES must be a whole number; {usage}");
        std::process::exit(2);
    };
    print!("{}", scale::spec(layout, nodes));
}
