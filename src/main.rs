//! `govshare`: the command-line tool over govshare-core.
//!
//! Run `govshare demo` for a guided tour on a generated store, or `govshare --help`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
