//! The `sssonector` binary: the command line in the library's `main`.

fn main() -> std::process::ExitCode {
    sssonector::main()
}
