//! Runs one throwaway database server for scripts (benchmarks, the compatibility matrix):
//! `dbserver postgres|mariadb [DATABASE] [--fast]` prints `url=<URL>` once the database
//! exists, then serves until stdin closes or the process is stopped; the server dies with it.
//! The server keeps its default durability (fsync on commit) unless `--fast` is given.

use std::io::Read;

use testkit::{Kind, Server};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let fast = std::env::args().any(|a| a == "--fast");
    let mut args = std::env::args().skip(1).filter(|a| a != "--fast");
    let kind = match args.next().as_deref() {
        Some("postgres") => Kind::Postgres,
        Some("mariadb") => Kind::MariaDb,
        _ => {
            eprintln!("usage: dbserver postgres|mariadb [DATABASE] [--fast]");
            std::process::exit(2);
        }
    };
    let name = args.next().unwrap_or_else(|| "shoal".into());
    let server = match Server::launch_with(kind, !fast).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dbserver: {e}");
            std::process::exit(1);
        }
    };
    let url = match server.create_database(&name).await {
        Ok(u) => u,
        Err(e) => {
            eprintln!("dbserver: {e}");
            std::process::exit(1);
        }
    };
    println!("url={url}");
    println!("version={}", server.version().await.unwrap_or_default());
    // Waits for stdin to close: the caller's end of a pipe, or a terminal's Ctrl-D.
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(server);
}
