//! The `plandeck` binary: error reporting set up, then the CLI.

fn main() -> std::process::ExitCode {
    let _ = color_eyre::install();
    plandeck::cli::main()
}
