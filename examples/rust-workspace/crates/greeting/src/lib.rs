//! The greeting the server answers with.

pub fn greeting(path: &str) -> String {
    format!("Hello from rust-workspace ({path})\n")
}
