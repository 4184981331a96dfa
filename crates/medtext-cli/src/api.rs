//! `medtext serve` and `medtext api-key`: the local API and its keys.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use medtext_api::{Config, Server};
use medtext_core::history::store::utc_minute;

use crate::{err, models_dir, open_history, policy, CliResult, PackArgs};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pack: PackArgs,
    /// Port on 127.0.0.1 (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8765)]
    port: u16,
}

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Make a key for one program that calls the local API. The key is
    /// printed once, as the last line; MedText keeps only its hash.
    Create {
        /// A name for the program, as the audit trail will show it.
        #[arg(long)]
        name: String,
    },
    /// List the keys: names, when made, last used, revoked (never the keys).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it stops working at once, also for a running `medtext serve`.
    Revoke {
        #[arg(long)]
        name: String,
    },
}

pub fn serve(args: ServeArgs) -> CliResult {
    // Refused before the history is opened, so the message is the policy's.
    policy().check_local_api().map_err(err)?;
    let (models, pack) = pack_location(&args.pack.pack);
    let server = Server::bind(
        Config {
            models_dir: models,
            pack,
            head: args.pack.head,
            port: args.port,
            policy: policy().clone(),
        },
        open_history()?,
    )
    .map_err(|e| e.to_string())?;
    let address = server.local_addr().map_err(|e| e.to_string())?;
    eprintln!(
        "serving the local API on 127.0.0.1 only; the model pack loads now (GET /ready answers 200 when it has). Ctrl+C stops it."
    );
    println!("http://{address}");
    server.run().map_err(|e| e.to_string())
}

/// The models directory and pack folder name for `pack`: a name inside the
/// models directory, or a path to a pack folder.
fn pack_location(pack: &str) -> (PathBuf, String) {
    let as_path = Path::new(pack);
    if as_path.join("manifest.json").is_file() {
        if let (Some(parent), Some(name)) = (as_path.parent(), as_path.file_name()) {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            return (parent.to_path_buf(), name.to_string_lossy().into_owned());
        }
    }
    (models_dir(), pack.to_string())
}

pub fn api_key_command(command: ApiKeyCommand) -> CliResult {
    let mut store = open_history()?;
    match command {
        ApiKeyCommand::Create { name } => {
            let key = store.create_api_key(&name).map_err(err)?;
            eprintln!(
                "API key \"{name}\" made. It is shown only now: keep it where the calling program keeps its secrets, and send it as `Authorization: Bearer KEY`."
            );
            println!("{}", key.as_str());
        }
        ApiKeyCommand::Revoke { name } => {
            store.revoke_api_key(&name).map_err(err)?;
            eprintln!("API key \"{name}\" revoked");
        }
        ApiKeyCommand::List { json } => {
            let keys = store.api_keys().map_err(err)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys).map_err(err)?);
                return Ok(());
            }
            for k in &keys {
                println!(
                    "{:<24} made {}  last used {}{}",
                    k.name,
                    utc_minute(k.created_at_ms),
                    k.last_used_at_ms.map_or("never".into(), utc_minute),
                    k.revoked_at_ms
                        .map(|ms| format!("  revoked {}", utc_minute(ms)))
                        .unwrap_or_default()
                );
            }
            eprintln!("{} key(s)", keys.len());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates_and_agree_with_the_date_parser() {
        assert_eq!(utc_minute(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_minute(1_795_000_000_000), "2026-11-18 11:06 UTC");
        for day in ["2000-02-29", "2024-12-31", "1999-03-01", "2026-11-26"] {
            let ms = crate::day_start_ms(day).unwrap();
            assert_eq!(utc_minute(ms + 61 * 60_000), format!("{day} 01:01 UTC"));
        }
    }
}
