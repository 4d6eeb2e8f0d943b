//! The run context every scenario works with: the target, the credentials, the report
//! being filled, and the global request counter. It runs load phases, the rate search and
//! the count checks against the database.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::time::Instant;

use crate::cpu::Probe;
use crate::db::{self, CountCheck, DbTarget};
use crate::openloop::{self, BodySpec, Endpoint, LoadSpec, PhaseResult};
use crate::report::{Report, SearchSummary, StepRecord};
use crate::search::{self, Criteria, RateSearch, SearchParams};
use crate::{seconds, LoadArgs, Route, SearchArgs};

/// Everything a scenario works with.
pub struct Ctx {
    pub endpoint: Endpoint,
    pub base_url: String,
    pub run_id: String,
    pub run_start: Instant,
    pub authorization: String,
    pub app_key: String,
    pub app_secret: String,
    pub load: LoadArgs,
    pub db: Option<DbTarget>,
    pub probe: Probe,
    /// Global request counter: every request of the run gets a distinct index.
    pub next_index: u64,
    pub report: Report,
}

impl Ctx {
    /// The `message_id` prefix of one group of phases, e.g. `lt-<run>-d-`.
    pub fn prefix(&self, group: &str) -> String {
        format!("lt-{}-{group}-", self.run_id)
    }

    /// Runs one load phase of inbox messages and appends it to the report; returns its
    /// index.
    pub async fn phase(
        &mut self,
        name: &str,
        route: Route,
        rate: f64,
        duration: Duration,
        id_prefix: &str,
    ) -> Result<usize> {
        self.phase_with(name, route, rate, duration, id_prefix, &BodySpec::inbox())
            .await
    }

    /// Runs one load phase whose bodies follow `body` and appends it to the report;
    /// returns its index.
    pub async fn phase_with(
        &mut self,
        name: &str,
        route: Route,
        rate: f64,
        duration: Duration,
        id_prefix: &str,
        body: &BodySpec,
    ) -> Result<usize> {
        let spec = self.load_spec(
            route,
            rate,
            duration,
            id_prefix,
            body,
            self.load.connections,
        );
        let r = openloop::run_phase(name, &self.endpoint, &spec, self.run_start).await?;
        self.report.phases.push(r);
        Ok(self.report.phases.len() - 1)
    }

    /// The spec of one phase, its request indices taken from the run's counter (for
    /// phases a scenario runs side by side through [`openloop::run_phase`]).
    pub fn load_spec(
        &mut self,
        route: Route,
        rate: f64,
        duration: Duration,
        id_prefix: &str,
        body: &BodySpec,
        connections: usize,
    ) -> LoadSpec {
        let spec = LoadSpec {
            rate,
            duration,
            max_requests: self.load.max_requests,
            connections,
            timeout: Duration::from_millis(self.load.timeout_ms.max(1)),
            path: route.path().to_owned(),
            authorization: self.authorization.clone(),
            id_prefix: id_prefix.to_owned(),
            first_index: self.next_index,
            body: body.clone(),
        };
        self.next_index += openloop::planned_requests(rate, duration, spec.max_requests);
        spec
    }

    pub fn phase_result(&self, i: usize) -> Result<&PhaseResult> {
        self.report
            .phases
            .get(i)
            .ok_or_else(|| anyhow!("no phase {i}"))
    }

    /// One request through the ordinary HTTP client, to fail early and clearly when the
    /// route is missing or the credentials are wrong.
    pub async fn preflight(&mut self, route: Route) -> Result<()> {
        self.preflight_with(route, &BodySpec::inbox()).await
    }

    /// [`Ctx::preflight`] with bodies that follow `body`.
    pub async fn preflight_with(&mut self, route: Route, body: &BodySpec) -> Result<()> {
        let index = self.next_index;
        self.next_index += 1;
        let id = format!("{}{index}", self.prefix("p"));
        let client = crate::http_builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let resp = client
            .post(format!("{}{}", self.base_url, route.path()))
            .basic_auth(&self.app_key, Some(&self.app_secret))
            .header("content-type", "application/json")
            .body(body.body(&id, index))
            .send()
            .await
            .with_context(|| format!("preflight POST {}", route.path()))?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(());
        }
        let hint = match (route, status.as_u16()) {
            (Route::Bench, 404) => " (is `[bench] null_route = true` in the daemon's config?)",
            (_, 401) => " (check --app-key / --app-secret)",
            _ => "",
        };
        bail!(
            "preflight POST {} answered {status}{hint}: {}",
            route.path(),
            body.chars().take(300).collect::<String>()
        )
    }

    /// Steps the rate as [`RateSearch`] says until it is done; each step a phase.
    pub async fn find_max(
        &mut self,
        label: &str,
        route: Route,
        s: &SearchArgs,
        id_prefix: &str,
    ) -> Result<SearchSummary> {
        let params = SearchParams {
            start_rate: s.start_rate,
            factor: s.step_factor,
            min_rate: s.min_rate,
            max_rate: s.max_rate,
            bisect_steps: s.bisect_steps,
            max_steps: s.max_steps,
        };
        let criteria = Criteria {
            min_throughput_ratio: s.min_throughput,
            p99_max_ms: s.p99_max_ms,
        };
        let step = seconds(s.step_seconds, "--step-seconds")?;
        let mut search = RateSearch::new(params.clone());
        if search.next_rate().is_none() {
            bail!(
                "invalid rate search parameters (need --step-factor > 1, --max-rate >= --min-rate)"
            );
        }
        let mut steps = Vec::new();
        let (mut ok_2xx, mut unknown) = (0u64, 0u64);
        let mut best_achieved = None;
        while let Some(rate) = search.next_rate() {
            if !steps.is_empty() {
                tokio::time::sleep(Duration::from_millis(s.settle_ms)).await;
            }
            let name = format!("{label} step {} @ {rate:.0}/s", steps.len() + 1);
            let i = self.phase(&name, route, rate, step, id_prefix).await?;
            let r = self.phase_result(i)?;
            let reasons = search::judge(r, &criteria);
            let passed = reasons.is_empty();
            ok_2xx += r.ok_2xx;
            unknown += r.timeouts + r.errors;
            eprintln!(
                "[{label}] {rate:>9.0}/s: achieved {:>9.0}/s, p50 {:>7.2} ms, p99 {:>8.2} ms, \
                 {} ok, client {:.2} cores: {}",
                r.achieved_rate,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.ok_2xx,
                r.client_cpu_cores,
                if passed {
                    "pass".to_owned()
                } else {
                    format!("FAIL ({})", reasons.join("; "))
                }
            );
            if passed && search.best().is_none_or(|b| rate > b) {
                best_achieved = Some(r.achieved_rate);
            }
            search.record(rate, passed);
            steps.push(StepRecord {
                rate,
                passed,
                reasons,
                phase: i,
            });
        }
        Ok(SearchSummary {
            path: route.path().to_owned(),
            params,
            criteria,
            max_rate: search.best(),
            max_rate_achieved: best_achieved,
            first_fail: search.first_fail(),
            steps,
            ok_2xx,
            unknown_fate: unknown,
            id_prefix: id_prefix.to_owned(),
        })
    }

    /// Compares 2xx answers with stored rows under `prefix`, records the check and a
    /// problem if they differ.
    pub async fn count_check(
        &mut self,
        what: &str,
        prefix: &str,
        answered: u64,
        unknown: u64,
    ) -> Result<Option<CountCheck>> {
        let Some(target) = &self.db else {
            self.report.problems.push(format!(
                "count check `{what}` skipped: no database (pass --database-url with --target)"
            ));
            return Ok(None);
        };
        let client = db::connect(target).await?;
        let app_id = db::app_id(&client, &self.app_key).await?;
        let check = db::count_check(&client, what, app_id, prefix, answered, unknown).await?;
        if !check.ok {
            let mut msg = format!(
                "COUNT MISMATCH ({what}): {} 2xx answers but {} rows in messages and {} in \
                 message_keys under `{prefix}`",
                check.answered_2xx, check.rows_in_messages, check.rows_in_message_keys
            );
            if unknown > 0 {
                msg.push_str(&format!(
                    " ({unknown} requests timed out or broke; they may have been stored)"
                ));
            }
            eprintln!("\n!!! {msg} !!!\n");
            self.report.problems.push(msg);
        }
        self.report.count_checks.push(check.clone());
        Ok(Some(check))
    }
}
