//! Build a named test fixture store for test suites that are not Rust (Python's), so every
//! suite uses the fixtures of `govshare-testkit`:
//!
//! ```sh
//! govshare-fixture bindings DIR    # prints {"path": ..., "province": ..., "data": ...}
//! ```

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [name, dir] if name == "bindings" => {
            let s = govshare_testkit::bindings_store(std::path::Path::new(dir));
            println!(
                "{{\"path\": {:?}, \"province\": {:?}, \"data\": {:?}}}",
                s.path.display().to_string(),
                s.province,
                s.data.display().to_string()
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: govshare-fixture bindings DIR");
            ExitCode::from(2)
        }
    }
}
