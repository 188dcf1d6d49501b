//! The `posts-api` binary; the commands are in `api::cli`.

fn main() -> std::process::ExitCode {
    api::cli::main()
}
