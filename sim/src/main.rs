//! `umsd-sim`: run provider simulators (and an SMTP sink) as a standalone process for
//! demos and load tests, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use umsd_sim::ismg::{self, IsmgConfig};
use umsd_sim::smtp::{self, SmtpConfig};
use umsd_sim::{Kind, OutcomeMix, SimConfig};

#[derive(Debug, Parser)]
#[command(
    name = "umsd-sim",
    version,
    about = "Local simulators of the messaging providers umsd delivers through",
    long_about = "Runs one simulator from flags (--kind …), several from --config (a JSON \
                  array of simulator configs), an SMTP sink (--smtp) and/or a CMPP gateway \
                  (--ismg, --ismg-config). Prints one \
                  line per listener and runs until SIGINT or SIGTERM. Each HTTP simulator \
                  also serves GET /_sim/stats, GET /_sim/received?limit=N, \
                  GET /_sim/recalls and POST /_sim/faults."
)]
struct Cli {
    /// Provider to simulate: dingtalk, dingtalk_robot, wecom, feishu, jpush, jsms,
    /// wechat_oa, webhook.
    #[arg(long)]
    kind: Option<Kind>,
    /// Listen address of the simulator given by --kind.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Send requests per second (token bucket, burst = rate); unlimited if absent.
    #[arg(long)]
    rate: Option<u32>,
    /// Delay before an outcome is visible or pushed.
    #[arg(long, default_value_t = 300)]
    receipt_delay_ms: u64,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value_t = 7200)]
    token_ttl_seconds: u64,
    /// How old a message may be and still be recalled (DingTalk, WeCom, Feishu, JPush).
    #[arg(long, default_value_t = 24 * 3600)]
    recall_window_seconds: u64,
    /// Where pushed receipts go (JSMS, WeChat OA, Feishu read events).
    #[arg(long)]
    callback_url: Option<String>,
    /// Outcome weights as DELIVERED,UNDELIVERED,CLICKED, e.g. 80,10,10.
    #[arg(long, value_parser = parse_outcomes)]
    outcomes: Option<OutcomeMix>,
    /// Key the simulator accepts (default per kind, see /_sim/config).
    #[arg(long)]
    app_key: Option<String>,
    /// Secret the simulator accepts (default per kind, see /_sim/config).
    #[arg(long)]
    app_secret: Option<String>,
    /// Worker threads per simulator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// JSON file holding an array of simulator configs to run.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also run an SMTP sink on this address.
    #[arg(long)]
    smtp: Option<SocketAddr>,
    /// Serve HTTPS (self-signed certificate, printed at start).
    #[arg(long)]
    tls: bool,
    /// Offer STARTTLS on the SMTP sink (self-signed certificate).
    #[arg(long)]
    smtp_starttls: bool,
    /// Speak implicit TLS (SMTPS) on the SMTP sink instead.
    #[arg(long)]
    smtp_implicit_tls: bool,
    /// Also run a CMPP 2.0/3.0 gateway (ISMG) on this address, e.g. 127.0.0.1:7890
    /// (default account 900001, password 888888).
    #[arg(long)]
    ismg: Option<SocketAddr>,
    /// JSON file holding the gateway's configuration (accounts, window, rate, report
    /// delay, Stat mix, …); --ismg overrides its listen address.
    #[arg(long)]
    ismg_config: Option<PathBuf>,
}

fn parse_outcomes(s: &str) -> Result<OutcomeMix, String> {
    let parts: Vec<u32> = s
        .split(',')
        .map(|p| p.trim().parse::<u32>().map_err(|e| format!("{p:?}: {e}")))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [delivered, undelivered, clicked] => Ok(OutcomeMix {
            delivered,
            undelivered,
            clicked,
        }),
        _ => Err("expected three weights: DELIVERED,UNDELIVERED,CLICKED".to_owned()),
    }
}

fn configs(cli: &Cli) -> Result<Vec<SimConfig>, String> {
    let mut out = Vec::new();
    if let Some(path) = &cli.config {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let list: Vec<SimConfig> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        out.extend(list);
    }
    if let Some(kind) = cli.kind {
        out.push(SimConfig {
            kind,
            listen: cli.listen,
            threads: cli.threads,
            rate_per_second: cli.rate,
            token_ttl_seconds: cli.token_ttl_seconds,
            receipt_delay_ms: cli.receipt_delay_ms,
            outcomes: cli.outcomes.unwrap_or_default(),
            callback_url: cli.callback_url.clone(),
            app_key: cli.app_key.clone().unwrap_or_default(),
            app_secret: cli.app_secret.clone().unwrap_or_default(),
            tls: cli.tls,
            recall_window_seconds: cli.recall_window_seconds,
        });
    }
    Ok(out)
}

fn ismg_config(cli: &Cli) -> Result<Option<IsmgConfig>, String> {
    let mut cfg = match &cli.ismg_config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cfg: IsmgConfig =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            cfg
        }
        None if cli.ismg.is_some() => IsmgConfig::default(),
        None => return Ok(None),
    };
    if let Some(listen) = cli.ismg {
        cfg.listen = listen;
    }
    Ok(Some(cfg))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (configs, ismg_cfg) = match configs(&cli).and_then(|c| Ok((c, ismg_config(&cli)?))) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("umsd-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if configs.is_empty() && cli.smtp.is_none() && ismg_cfg.is_none() {
        eprintln!("umsd-sim: nothing to run: give --kind, --config, --smtp or --ismg");
        return ExitCode::from(2);
    }

    let mut sims = Vec::new();
    for cfg in configs {
        let kind = cfg.kind;
        let listen = cfg.listen;
        match umsd_sim::start(cfg) {
            Ok(h) => {
                println!("{kind} listening on {}", h.url());
                if let Some(pem) = h.cert_pem() {
                    println!("{kind} certificate:\n{pem}");
                }
                sims.push(h);
            }
            Err(e) => {
                eprintln!("umsd-sim: {kind} on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let mut smtp_sink = None;
    if let Some(listen) = cli.smtp {
        let cfg = SmtpConfig {
            listen,
            tls: cli.smtp_starttls,
            implicit_tls: cli.smtp_implicit_tls,
            ..SmtpConfig::default()
        };
        match smtp::start(cfg) {
            Ok(h) => {
                let mode = if cli.smtp_implicit_tls {
                    " (implicit tls)"
                } else if cli.smtp_starttls {
                    " (starttls)"
                } else {
                    ""
                };
                println!("smtp listening on smtp://{}{mode}", h.addr());
                smtp_sink = Some(h);
            }
            Err(e) => {
                eprintln!("umsd-sim: smtp on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    let mut ismg_sim = None;
    if let Some(cfg) = ismg_cfg {
        let listen = cfg.listen;
        match ismg::start(cfg) {
            Ok(h) => {
                let cfg = h.config();
                let accounts: Vec<&str> = cfg.accounts.iter().map(|a| a.account.as_str()).collect();
                println!(
                    "ismg listening on cmpp://{} (gateway {}, accounts {})",
                    h.addr(),
                    cfg.gateway_id,
                    accounts.join(", ")
                );
                ismg_sim = Some(h);
            }
            Err(e) => {
                eprintln!("umsd-sim: ismg on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }

    if let Err(e) = wait_for_signal() {
        eprintln!("umsd-sim: cannot wait for signals: {e}");
        return ExitCode::FAILURE;
    }
    drop(ismg_sim);
    drop(smtp_sink);
    drop(sims);
    ExitCode::SUCCESS
}

fn wait_for_signal() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
}
