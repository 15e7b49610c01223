//! The `sscnmf` command line. All the work is in the library; this binary
//! parses arguments, shows progress and maps errors to exit codes:
//! 0 success, 1 internal error (a bug), 2 usage or input error.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
