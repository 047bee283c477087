//! `cargo run -p tandem-config --example check -- CLUSTER NODE [--json]`: what `tandem check`
//! does, for use before the CLI exists and for writing test fixtures.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(cluster), Some(node)) = (args.first(), args.get(1)) else {
        eprintln!("usage: check CLUSTER NODE [--json]");
        return ExitCode::from(2);
    };
    match tandem_config::check(Path::new(cluster), Path::new(node)) {
        Ok(loaded) => {
            if args.iter().any(|a| a == "--json") {
                println!("{:#}", tandem_config::check_json(&loaded));
            } else {
                print!("{}", tandem_config::check_summary(&loaded));
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for e in &diags.errors {
                println!("{e}");
            }
            for w in &diags.warnings {
                println!("warning: {w}");
            }
            ExitCode::from(1)
        }
    }
}
