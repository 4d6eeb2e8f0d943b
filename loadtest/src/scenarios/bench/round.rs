//! One `bench` round: R_http, R_copy, R_daemon (count-checked), then R_e2e on each
//! channel, each on a quiet daemon.

use anyhow::Result;

use super::args::{BenchArgs, E2eChannel};
use super::e2e::{self, E2eSearch};
use super::report::{r_ref, E2eFigure, RoundSummary};
use super::run::Env;
use crate::copy::{self, CopyParams, CopyResult};
use crate::db::DbTarget;
use crate::report::{opt, SearchSummary};
use crate::scenarios::Ctx;
use crate::Route;

/// What one round measured.
pub(super) struct Round {
    pub(super) summary: RoundSummary,
    pub(super) http: Option<SearchSummary>,
    pub(super) copy: CopyResult,
    pub(super) daemon: Option<SearchSummary>,
}

/// R_http, R_copy, R_daemon and R_e2e per channel, back to back.
pub(super) async fn one_round(
    ctx: &mut Ctx,
    a: &BenchArgs,
    env: &Env,
    db_target: &DbTarget,
    round: usize,
    channels: &[E2eChannel],
) -> Result<(Round, Vec<E2eSearch>)> {
    let tag = |name: &str| {
        if a.rounds > 1 {
            format!("{name} r{round}")
        } else {
            name.to_owned()
        }
    };
    env.quiet.wait_recorded(ctx, &tag("R_http")).await?;
    eprintln!("== {}: POST /bench/messages ==", tag("R_http"));
    let prefix = ctx.prefix(&format!("h{round}"));
    let http = ctx
        .find_max(&tag("R_http"), Route::Bench, &a.search, &prefix)
        .await?;

    env.quiet.wait_recorded(ctx, &tag("R_copy")).await?;
    eprintln!(
        "== {}: binary COPY of {} messages, chunks of {}, {} connections ==",
        tag("R_copy"),
        a.copy_messages,
        a.copy_chunk,
        a.copy_connections
    );
    let params = CopyParams {
        messages: a.copy_messages,
        chunk: a.copy_chunk,
        connections: a.copy_connections,
    };
    let copy_prefix = format!("cp-{}-{round}-", ctx.run_id);
    let offset = ctx.run_start.elapsed().as_secs_f64();
    let mut c = copy::run(db_target, env.app_id, &copy_prefix, &params).await?;
    c.start_offset_s = offset;
    eprintln!(
        "[{}] {:.0} messages/s ({:.0} rows/s) in {:.2} s; cleanup removed {}+{}+{} rows in {:.2} s",
        tag("R_copy"),
        c.messages_per_second,
        c.rows_per_second,
        c.elapsed_s,
        c.cleanup.deleted_messages,
        c.cleanup.deleted_message_keys,
        c.cleanup.deleted_message_queue,
        c.cleanup.elapsed_s
    );
    if c.cleanup.left_over > 0 || c.cleanup.deleted_messages != c.messages {
        ctx.report.problems.push(format!(
            "R_copy cleanup: deleted {} of {} messages, {} rows left over",
            c.cleanup.deleted_messages, c.messages, c.cleanup.left_over
        ));
    }

    env.quiet.wait_recorded(ctx, &tag("R_daemon")).await?;
    eprintln!("== {}: POST /v1/messages ==", tag("R_daemon"));
    let prefix = ctx.prefix(&format!("d{round}"));
    let daemon = ctx
        .find_max(&tag("R_daemon"), Route::Send, &a.search, &prefix)
        .await?;
    let (ok, unknown) = (daemon.ok_2xx, daemon.unknown_fate);
    ctx.count_check(&format!("{} search", tag("R_daemon")), &prefix, ok, unknown)
        .await?;

    let r_http = http.max_rate;
    let r_copy = c.messages_per_second;
    let r_daemon = daemon.max_rate;
    let r_ref = r_http.and_then(|h| r_ref(h, r_copy));
    let ratio = match (r_daemon, r_ref) {
        (Some(d), Some(r)) => Some(d / r),
        _ => None,
    };

    let mut searches = Vec::new();
    let mut figures = Vec::new();
    for &channel in channels {
        eprintln!(
            "== {}: POST /v1/messages on {}, delivered within {:.1} s, accept->delivered p99 <= {:.0} ms ==",
            tag(&format!("R_e2e {}", channel.name())),
            channel.name(),
            a.e2e_drain_s,
            a.e2e_p99_ms
        );
        let s = e2e::search(ctx, a, env, round, channel, r_daemon).await?;
        figures.push(E2eFigure::new(channel, s.max_rate, r_ref, r_daemon));
        searches.push(s);
    }

    eprintln!(
        "[round {round}] R_http {}, R_copy {r_copy:.0}, R_daemon {}, ratio {}{}",
        opt(r_http, 0),
        opt(r_daemon, 0),
        opt(ratio, 3),
        figures
            .iter()
            .map(|f| format!(
                ", R_e2e_{} {} (/R_ref {}, /R_daemon {})",
                f.channel.name(),
                opt(f.r_e2e, 0),
                opt(f.over_ref, 3),
                opt(f.over_daemon, 3)
            ))
            .collect::<String>()
    );
    let round = Round {
        summary: RoundSummary {
            round,
            r_http,
            r_copy,
            r_daemon,
            r_ref,
            ratio,
            e2e: figures,
        },
        http: Some(http),
        copy: c,
        daemon: Some(daemon),
    };
    Ok((round, searches))
}
