//! The `dlsrv` binary; everything is in the library ([`dlsrv::cli::main`]).

fn main() -> std::process::ExitCode {
    dlsrv::cli::main()
}
