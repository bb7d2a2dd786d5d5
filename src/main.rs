//! The `plandeck` binary: error reporting set up, then the CLI.
//!
//! A panic anywhere (the engine's tasks included) stops every running step
//! at once and ends the process: the store keeps the run as it was, so it
//! shows as interrupted and `plandeck resume` continues it. The run's
//! scratch directory (its steps' outputs files) goes with it.

fn main() -> std::process::ExitCode {
    // A detached step's supervisor (`plandeck supervise DIR`, started by
    // plandeck itself) and the fork server that starts supervisors
    // (`plandeck supervise --server`) report through files and a socket
    // only: they start without the error reporting set-up or the parsing
    // of the whole command line (a cost per detached step).
    let mut args = std::env::args_os().skip(1);
    if let (Some(mode), Some(dir), None) = (args.next(), args.next(), args.next())
        && mode == "supervise"
    {
        use plandeck::engine::remote::{detached, forkserver};
        // `supervise --server`: the fork server that starts supervisors.
        let code = if dir == forkserver::SERVER_ARG {
            forkserver::serve()
        } else {
            detached::supervise(std::path::Path::new(&dir))
        };
        return std::process::ExitCode::from(code as u8);
    }
    let _ = color_eyre::install();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        plandeck::engine::runner::stop_all_now();
        plandeck::engine::scratch::remove_all_now();
        report(info);
        // Not `eprintln!`: it panics when stderr is gone (a hung-up terminal).
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"plandeck: internal error; the run is left resumable (`plandeck runs`, then `plandeck resume RUN`)\n",
        );
        std::process::exit(3);
    }));
    plandeck::cli::main()
}
