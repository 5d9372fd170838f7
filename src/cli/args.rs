//! The command line's definition, without behaviour: `src/main.rs` parses it and `build.rs`
//! renders the man page (`radacctd.1`) from it, so this file depends on clap and std only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "radacctd",
    version,
    about = "RADIUS accounting daemon for ISPs",
    after_help = "Example: radacctd serve --config /etc/radacctd/config.toml"
)]
pub struct Cli {
    /// Configuration file (TOML). Without one, defaults apply: SQLite `radacctd.db`, RADIUS on
    /// 0.0.0.0:1813 and a loopback client 127.0.0.1 with secret `testing123`.
    #[arg(long, short, global = true, env = "RADACCTD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    #[command(after_help = "Example: radacctd serve --config /etc/radacctd/config.toml")]
    Serve,
    /// Apply pending database migrations and exit.
    #[command(after_help = "Example: radacctd migrate --config /etc/radacctd/config.toml")]
    Migrate,
    /// Check the configuration and explain any problem.
    #[command(after_help = "Example: radacctd check-config --config /etc/radacctd/config.toml")]
    CheckConfig,
    /// Print an API bearer token signed with `api.jwt_secret` (or a private key given by --key);
    /// without a config file, with the secret the quick start keeps beside the SQLite file.
    #[command(
        after_help = "Example: radacctd token --role reseller --reseller-id 7 --perm sessions.view --ttl 12h"
    )]
    Token(TokenArgs),
    /// Close stale sessions now (one sweep), then sync `subscribers.is_online`.
    #[command(after_help = "Example: radacctd sweep --dry-run --config /etc/radacctd/config.toml")]
    Sweep {
        /// Print what would be closed (count and the first rows); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Compare one router's `/ppp/active` with the open sessions of that NAS now: print the
    /// ghosts, zombies and mismatches; without --dry-run also close the ghosts (as the daemon's
    /// reconciliation does every `reconcile.interval_secs`).
    #[command(
        after_help = "Example: radacctd reconcile --nas 3 --dry-run --config /etc/radacctd/config.toml"
    )]
    Reconcile {
        /// The `nas` row's id (it needs RouterOS API credentials).
        #[arg(long)]
        nas: i64,
        /// Print what was found; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move old closed sessions to `radacct_archive` now (one run).
    #[command(
        after_help = "Example: radacctd archive --dry-run --config /etc/radacctd/config.toml"
    )]
    Archive {
        /// Print what would be moved (count and the first rows); change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the journal's entries, or retry the entries replay rejected (safe while the daemon
    /// runs: the live journal file is never changed).
    #[command(
        after_help = "Example: radacctd journal inspect --rejected --config /etc/radacctd/config.toml"
    )]
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Who had this address at that time? The sessions, live and archived, that held an IPv4
    /// or IPv6 address (or a block overlapping addr/len) at a moment; prints the answer
    /// `GET /api/attribution` gives, as JSON, and records the query in the attribution audit.
    #[command(
        after_help = "Example: radacctd attribution --ip 100.64.3.7 --at 2026-03-02T14:03:11Z --window 30 --config /etc/radacctd/config.toml"
    )]
    Attribution {
        /// The address (`100.64.3.7`, `2001:db8::1`, `::ffff:100.64.3.7`) or block
        /// (`2001:db8:12::/56`).
        #[arg(long)]
        ip: String,
        /// The moment: RFC 3339 with its offset (`2026-03-02T14:03:11Z`,
        /// `2026-03-02T17:03:11+03:00`).
        #[arg(long)]
        at: String,
        /// Seconds of clock skew allowed on each side of --at (at most 86400).
        #[arg(long, default_value_t = 0)]
        window: u64,
        /// Most sessions to print (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
        /// Print how the database runs the query (PostgreSQL: EXPLAIN ANALYZE, which shows
        /// whether the attribution indexes are used) instead of the answer; nothing is audited.
        #[arg(long)]
        explain: bool,
    },
    /// Print shell completions for bash, zsh or fish on standard output.
    #[command(after_help = "Example: radacctd completions bash > /etc/bash_completion.d/radacctd")]
    Completions {
        /// The shell.
        #[arg(value_parser = ["bash", "zsh", "fish"])]
        shell: String,
    },
    /// Print the man page (roff), the one the package installs as radacctd(1).
    #[command(hide = true, after_help = "Example: radacctd man | man -l -")]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Print the journal's entries (key, kind, time) and a count.
    #[command(after_help = "Example: radacctd journal inspect --config /etc/radacctd/config.toml")]
    Inspect {
        /// Print the entries moved to `<journal>.rejected` instead, with their errors.
        #[arg(long)]
        rejected: bool,
    },
    /// Apply the entries of `<journal>.rejected` to the database again, one by one; those that
    /// succeed leave the file, the others stay with their new error. Exits 1 if any remain.
    #[command(after_help = "Example: radacctd journal retry --config /etc/radacctd/config.toml")]
    Retry,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// `admin` (sees every reseller) or `reseller` (sees its subtree). Required with a config
    /// file; without one (quick start) it defaults to `admin`.
    #[arg(long, value_parser = ["admin", "reseller"])]
    pub role: Option<String>,
    /// The reseller's id (`resellers.id`); required with `--role reseller`.
    #[arg(long)]
    pub reseller_id: Option<i64>,
    /// A permission such as `sessions.view`; repeat, or separate with commas. Without a config
    /// file and without --role, `sessions.view` when none is given.
    #[arg(long = "perm")]
    pub permissions: Vec<String>,
    /// Lifetime: seconds, or with a unit (`15m`, `12h`, `7d`).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// The `sub` claim.
    #[arg(long)]
    pub sub: Option<String>,
    /// A PEM private key to sign with instead of the HS256 secret (with --alg RS256 or ES256).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// The algorithm for --key.
    #[arg(long, value_parser = ["RS256", "ES256"], requires = "key")]
    pub alg: Option<String>,
}

/// A duration such as `3600`, `90s`, `15m`, `12h` or `7d`, in seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("invalid duration {s:?}: use s, m, h or d")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("1d"), Ok(86_400));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
