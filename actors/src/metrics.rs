//! Metric names, in one place. Prometheus conventions: `umsd_` prefix, base units
//! (`_seconds`), `_total` for counters, low-cardinality labels only (route, status, app,
//! priority, reason, outcome — never a user or message id).

/// Counter: HTTP requests by `route` (the route pattern), `method` and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "umsd_http_requests_total";
/// Histogram: HTTP request latency by `route`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "umsd_http_request_duration_seconds";
/// Counter: messages durably accepted, by `app` and `priority`.
pub const MESSAGES_ACCEPTED_TOTAL: &str = "umsd_messages_accepted_total";
/// Counter: sends answered from a stored idempotency key (replays), by `app`.
pub const MESSAGES_REPLAYED_TOTAL: &str = "umsd_messages_replayed_total";
/// Counter: sends refused, by `reason` (validation, unauthorized, conflict, queue_full,
/// database_unavailable, payload_too_large, invalid_json).
pub const REJECTIONS_TOTAL: &str = "umsd_rejections_total";
/// Histogram: messages written per group-commit transaction.
pub const INGEST_BATCH_SIZE: &str = "umsd_ingest_batch_size";
/// Histogram: duration of one group-commit transaction, BEGIN to COMMIT.
pub const INGEST_COMMIT_DURATION_SECONDS: &str = "umsd_ingest_commit_duration_seconds";
/// Histogram: time a message waited in the ingest before its transaction started.
pub const INGEST_WAIT_SECONDS: &str = "umsd_ingest_wait_seconds";
/// Counter: group-commit transactions by `outcome` (ok, error).
pub const INGEST_COMMITS_TOTAL: &str = "umsd_ingest_commits_total";
/// Counter: group commits retried because a concurrent commit took one of their
/// idempotency keys first.
pub const INGEST_KEY_RACES_TOTAL: &str = "umsd_ingest_key_races_total";
/// Gauge: messages accepted by the front door and not yet answered (buffered + committing).
pub const INGEST_QUEUE_DEPTH: &str = "umsd_ingest_queue_depth";
/// Gauge: group-commit transactions in flight.
pub const INGEST_COMMITS_IN_FLIGHT: &str = "umsd_ingest_commits_in_flight";
/// Gauge: database pool connections by `state` (idle, in_use) and waiting tasks.
pub const DB_POOL_CONNECTIONS: &str = "umsd_db_pool_connections";
/// Gauge: 1 when the node is ready (`/readyz` answers 200).
pub const READY: &str = "umsd_ready";

/// Counter: messages planned (audience expanded), by `priority`.
pub const PLANNER_MESSAGES_TOTAL: &str = "umsd_planner_messages_total";
/// Counter: planned targets by `channel` and `outcome` (queued, or the loss reason:
/// unknown_user, user_disabled, channel_disabled, no_address).
pub const PLANNER_TARGETS_TOTAL: &str = "umsd_planner_targets_total";
/// Histogram: time from a message's acceptance to its (first page's) planning.
pub const PLANNER_LAG_SECONDS: &str = "umsd_planner_lag_seconds";
/// Gauge: due messages not planned yet (`message_queue`, counted every second).
pub const PLANNER_BACKLOG: &str = "umsd_planner_backlog";
/// Gauge: how long the oldest due, unplanned message has waited, in seconds.
pub const PLANNER_OLDEST_SECONDS: &str = "umsd_planner_oldest_seconds";
/// Histogram: duration of one planning pass (read, resolve, one transaction).
pub const PLANNER_PASS_SECONDS: &str = "umsd_planner_pass_seconds";
/// Histogram: messages (or pages of paged audiences) planned per pass.
pub const PLANNER_PASS_MESSAGES: &str = "umsd_planner_pass_messages";
/// Gauge: scheduled messages waiting for their time (counted every 5 s).
pub const SCHEDULER_PENDING: &str = "umsd_scheduler_pending";
/// Counter: scheduled messages handed to the planner at (or after) their time.
pub const SCHEDULER_FIRED_TOTAL: &str = "umsd_scheduler_fired_total";
/// Histogram: how late a scheduled message fired after its `send_at` (large values: umsd
/// was not running at the time).
pub const SCHEDULER_LATENESS_SECONDS: &str = "umsd_scheduler_lateness_seconds";
/// Gauge: strategy deadlines waiting in the database (one per batch of targets, message
/// and later step; counted every 5 s).
pub const STRATEGY_TIMERS_PENDING: &str = "umsd_strategy_timers_pending";
/// Counter: strategy deadlines that came due and were decided for every target of theirs.
pub const STRATEGY_TIMERS_FIRED_TOTAL: &str = "umsd_strategy_timers_fired_total";
/// Histogram: how late a strategy deadline was decided (committed) after its time.
pub const STRATEGY_TIMER_LATENESS_SECONDS: &str = "umsd_strategy_timer_lateness_seconds";
/// Counter: targets for which a later step went out, by `from` (the channel whose condition
/// held) and `to` (the step's channel).
pub const STRATEGY_FALLBACKS_TOTAL: &str = "umsd_strategy_fallbacks_total";
/// Counter: targets for which a later step did not go out because its condition was
/// settled in time (delivered or clicked), by the step's `channel`.
pub const STRATEGY_SETTLED_TOTAL: &str = "umsd_strategy_settled_total";
/// Counter: receipts (delivered, read or clicked) for a delivery whose fallback had
/// already gone out, by `channel`.
pub const STRATEGY_LATE_RECEIPTS_TOTAL: &str = "umsd_strategy_late_receipts_total";
/// Gauge: age of the oldest message with deliveries queued on a channel, by `channel` and
/// `priority` (0 when none); measured every second.
pub const DISPATCH_OLDEST_SECONDS: &str = "umsd_dispatch_oldest_seconds";
/// Gauge: deliveries held in memory by a channel sender, by `channel` and `priority`.
pub const CHANNEL_QUEUE_DEPTH: &str = "umsd_channel_queue_depth";
/// Gauge: provider requests in flight, by `channel`.
pub const CHANNEL_IN_FLIGHT: &str = "umsd_channel_in_flight";
/// Histogram: time a ready request waited for the channel's rate limiter, by `channel`.
pub const CHANNEL_RATE_WAIT_SECONDS: &str = "umsd_channel_rate_limit_wait_seconds";
/// Histogram: provider request duration, by `channel` and `type`.
pub const PROVIDER_REQUEST_DURATION_SECONDS: &str = "umsd_provider_request_duration_seconds";
/// Counter: delivery attempts by `channel`, `type` and `outcome` (submitted, delivered,
/// retryable, rate_limited, auth, permanent).
pub const DELIVERY_OUTCOMES_TOTAL: &str = "umsd_delivery_outcomes_total";
/// Counter: deliveries put back for another attempt, by `channel` and `class`.
pub const DELIVERY_RETRIES_TOTAL: &str = "umsd_delivery_retries_total";
/// Counter: access-token fetches by `channel` and `outcome` (ok, error).
pub const TOKEN_REFRESHES_TOTAL: &str = "umsd_token_refreshes_total";
/// Histogram: time from a message's acceptance to a delivery's submission, by `channel`.
pub const ACCEPT_TO_SUBMIT_SECONDS: &str = "umsd_accept_to_submit_seconds";
/// Counter: receipts by `channel` and `kind` (delivered, undelivered, read, clicked).
pub const RECEIPTS_TOTAL: &str = "umsd_receipts_total";
/// Counter: receipts whose provider id matched no delivery, by `channel`.
pub const RECEIPTS_UNMATCHED_TOTAL: &str = "umsd_receipts_unmatched_total";
/// Counter: receipts that came after the delivery's receipt window had closed (it was
/// `unknown`; the receipt still applies), by `channel`.
pub const RECEIPTS_LATE_TOTAL: &str = "umsd_receipts_late_total";
/// Counter: deliveries made `unknown` because no receipt came within the window, by
/// `channel`.
pub const RECEIPT_WINDOWS_CLOSED_TOTAL: &str = "umsd_receipt_windows_closed_total";
/// Counter: status changes written, by `outcome` (applied, stale).
pub const STATUS_WRITES_TOTAL: &str = "umsd_status_writes_total";
/// Histogram: status changes per write transaction.
pub const STATUS_BATCH_SIZE: &str = "umsd_status_batch_size";
/// Gauge: status changes and receipts waiting to be written.
pub const STATUS_PENDING: &str = "umsd_status_pending";

/// Gauge: CMPP sessions of a channel by `channel` and `state` (connecting, logging_in,
/// ready, paused, backing_off).
pub const CMPP_SESSIONS: &str = "umsd_cmpp_sessions";
/// Gauge: SUBMITs sent and not yet answered (the sessions' windows together), by `channel`.
pub const CMPP_WINDOW_IN_FLIGHT: &str = "umsd_cmpp_window_in_flight";
/// Counter: SUBMIT outcomes by `channel` and `result` (the SUBMIT_RESP Result: 0, 8, …,
/// `other` above 13, or `timeout` when no answer came after every try).
pub const CMPP_SUBMITS_TOTAL: &str = "umsd_cmpp_submits_total";
/// Counter: SUBMIT_RESP Result 8 (flow control) answers, by `channel`.
pub const CMPP_FLOW_CONTROL_TOTAL: &str = "umsd_cmpp_flow_control_total";
/// Counter: SUBMITs sent again after the response timeout, by `channel`.
pub const CMPP_RESENDS_TOTAL: &str = "umsd_cmpp_resends_total";
/// Counter: sessions lost and connected again, by `channel`.
pub const CMPP_RECONNECTS_TOTAL: &str = "umsd_cmpp_reconnects_total";
/// Counter: CONNECT refusals by `channel` and `status` (the CONNECT_RESP Status; 3 =
/// wrong credentials), plus `authenticator` when the gateway's AuthenticatorISMG is wrong
/// and verification is on.
pub const CMPP_LOGIN_FAILURES_TOTAL: &str = "umsd_cmpp_login_failures_total";
/// Histogram: SUBMIT → SUBMIT_RESP, by `channel`.
pub const CMPP_SUBMIT_RESP_SECONDS: &str = "umsd_cmpp_submit_resp_seconds";
/// Histogram: SUBMIT → its status report, by `channel`.
pub const CMPP_SUBMIT_TO_REPORT_SECONDS: &str = "umsd_cmpp_submit_to_report_seconds";
/// Counter: DELIVERs received by `channel` and `kind` (report, mo).
pub const CMPP_DELIVERS_TOTAL: &str = "umsd_cmpp_delivers_total";
/// Gauge: 1 while a channel has a configuration problem (e.g. refused credentials), by
/// `channel`.
pub const CHANNEL_PROBLEM: &str = "umsd_channel_problem";

/// Counter: posts of events to apps' callback URLs by `outcome` (delivered, retried,
/// dropped).
pub const CALLBACKS_TOTAL: &str = "umsd_callbacks_total";

/// Bucket bounds for latency histograms, in seconds (100 µs … 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket bounds for batch sizes.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Bucket bounds for slow outcomes such as status reports, in seconds (10 ms … 2 h).
pub const SLOW_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 7200.0,
];

/// Lateness of timers: milliseconds when umsd runs, up to a day when it was down at the time.
const LATENESS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0,
    86400.0,
];

/// Histograms and their buckets, for the exporter.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (HTTP_REQUEST_DURATION_SECONDS, LATENCY_BUCKETS),
    (INGEST_BATCH_SIZE, BATCH_BUCKETS),
    (INGEST_COMMIT_DURATION_SECONDS, LATENCY_BUCKETS),
    (INGEST_WAIT_SECONDS, LATENCY_BUCKETS),
    (PLANNER_LAG_SECONDS, LATENCY_BUCKETS),
    (PLANNER_PASS_SECONDS, LATENCY_BUCKETS),
    (PLANNER_PASS_MESSAGES, BATCH_BUCKETS),
    (SCHEDULER_LATENESS_SECONDS, LATENESS_BUCKETS),
    (STRATEGY_TIMER_LATENESS_SECONDS, LATENESS_BUCKETS),
    (CHANNEL_RATE_WAIT_SECONDS, LATENCY_BUCKETS),
    (PROVIDER_REQUEST_DURATION_SECONDS, LATENCY_BUCKETS),
    (ACCEPT_TO_SUBMIT_SECONDS, LATENCY_BUCKETS),
    (STATUS_BATCH_SIZE, BATCH_BUCKETS),
    (CMPP_SUBMIT_RESP_SECONDS, LATENCY_BUCKETS),
    (CMPP_SUBMIT_TO_REPORT_SECONDS, SLOW_BUCKETS),
];

/// Registers help texts with the installed recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency by route"
    );
    describe_counter!(
        MESSAGES_ACCEPTED_TOTAL,
        "Messages durably accepted, by app and priority"
    );
    describe_counter!(
        MESSAGES_REPLAYED_TOTAL,
        "Sends answered from a stored idempotency key, by app"
    );
    describe_counter!(REJECTIONS_TOTAL, "Sends refused, by reason");
    describe_histogram!(INGEST_BATCH_SIZE, "Messages per group-commit transaction");
    describe_histogram!(
        INGEST_COMMIT_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one group-commit transaction"
    );
    describe_histogram!(
        INGEST_WAIT_SECONDS,
        Unit::Seconds,
        "Time a message waited in the ingest before its transaction started"
    );
    describe_counter!(INGEST_COMMITS_TOTAL, "Group-commit transactions by outcome");
    describe_counter!(
        INGEST_KEY_RACES_TOTAL,
        "Group commits retried because a concurrent commit took one of their keys"
    );
    describe_gauge!(
        INGEST_QUEUE_DEPTH,
        "Messages handed to the ingest and not yet answered"
    );
    describe_gauge!(
        INGEST_COMMITS_IN_FLIGHT,
        "Group-commit transactions in flight"
    );
    describe_gauge!(DB_POOL_CONNECTIONS, "Database pool connections by state");
    describe_gauge!(READY, "1 when the node is ready");
    describe_counter!(PLANNER_MESSAGES_TOTAL, "Messages planned, by priority");
    describe_counter!(
        PLANNER_TARGETS_TOTAL,
        "Planned targets by channel and outcome (queued or the loss reason)"
    );
    describe_histogram!(
        PLANNER_LAG_SECONDS,
        Unit::Seconds,
        "Time from acceptance to planning"
    );
    describe_gauge!(PLANNER_BACKLOG, "Due messages not planned yet");
    describe_gauge!(
        PLANNER_OLDEST_SECONDS,
        Unit::Seconds,
        "How long the oldest due, unplanned message has waited"
    );
    describe_histogram!(
        PLANNER_PASS_SECONDS,
        Unit::Seconds,
        "Duration of one planning pass (one transaction for many messages)"
    );
    describe_histogram!(
        PLANNER_PASS_MESSAGES,
        "Messages (or pages of large audiences) planned per pass"
    );
    describe_gauge!(
        DISPATCH_OLDEST_SECONDS,
        Unit::Seconds,
        "Age of the oldest message with deliveries queued on the channel"
    );
    describe_gauge!(
        SCHEDULER_PENDING,
        "Scheduled messages waiting for their time"
    );
    describe_counter!(
        SCHEDULER_FIRED_TOTAL,
        "Scheduled messages handed to the planner"
    );
    describe_histogram!(
        SCHEDULER_LATENESS_SECONDS,
        Unit::Seconds,
        "How late scheduled messages fired after their send_at"
    );
    describe_gauge!(
        STRATEGY_TIMERS_PENDING,
        "Strategy deadlines waiting (one per batch of targets and later step)"
    );
    describe_counter!(
        STRATEGY_TIMERS_FIRED_TOTAL,
        "Strategy deadlines decided for every target of theirs"
    );
    describe_histogram!(
        STRATEGY_TIMER_LATENESS_SECONDS,
        Unit::Seconds,
        "How late strategy deadlines were decided after their time"
    );
    describe_counter!(
        STRATEGY_FALLBACKS_TOTAL,
        "Targets for which a later strategy step went out, by from and to channel"
    );
    describe_counter!(
        STRATEGY_SETTLED_TOTAL,
        "Targets whose later strategy step was settled in time and not sent"
    );
    describe_counter!(
        STRATEGY_LATE_RECEIPTS_TOTAL,
        "Receipts for deliveries whose fallback had already gone out"
    );
    describe_gauge!(
        CHANNEL_QUEUE_DEPTH,
        "Deliveries held in memory by a channel sender, by priority"
    );
    describe_gauge!(CHANNEL_IN_FLIGHT, "Provider requests in flight");
    describe_histogram!(
        CHANNEL_RATE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a ready request waited for the channel's rate limiter"
    );
    describe_histogram!(
        PROVIDER_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Provider request duration"
    );
    describe_counter!(
        DELIVERY_OUTCOMES_TOTAL,
        "Delivery attempts by channel and outcome class"
    );
    describe_counter!(
        DELIVERY_RETRIES_TOTAL,
        "Deliveries put back for another attempt"
    );
    describe_counter!(TOKEN_REFRESHES_TOTAL, "Access-token fetches by outcome");
    describe_histogram!(
        ACCEPT_TO_SUBMIT_SECONDS,
        Unit::Seconds,
        "Time from acceptance to submission to the provider"
    );
    describe_counter!(RECEIPTS_TOTAL, "Receipts by channel and kind");
    describe_counter!(
        RECEIPTS_LATE_TOTAL,
        "Receipts that came after the delivery's receipt window closed"
    );
    describe_counter!(
        RECEIPT_WINDOWS_CLOSED_TOTAL,
        "Deliveries made unknown: no receipt within the channel's receipt window"
    );
    describe_counter!(
        RECEIPTS_UNMATCHED_TOTAL,
        "Receipts whose provider id matched no delivery"
    );
    describe_counter!(STATUS_WRITES_TOTAL, "Status changes written, by outcome");
    describe_histogram!(STATUS_BATCH_SIZE, "Status changes per write transaction");
    describe_gauge!(
        STATUS_PENDING,
        "Status changes and receipts waiting to be written"
    );
    describe_gauge!(CMPP_SESSIONS, "CMPP sessions by channel and state");
    describe_gauge!(
        CMPP_WINDOW_IN_FLIGHT,
        "CMPP SUBMITs sent and not yet answered, by channel"
    );
    describe_counter!(
        CMPP_SUBMITS_TOTAL,
        "CMPP SUBMIT outcomes by channel and result"
    );
    describe_counter!(
        CMPP_FLOW_CONTROL_TOTAL,
        "CMPP SUBMIT_RESP Result 8 (flow control) answers, by channel"
    );
    describe_counter!(
        CMPP_RESENDS_TOTAL,
        "CMPP SUBMITs sent again after the response timeout"
    );
    describe_counter!(
        CMPP_RECONNECTS_TOTAL,
        "CMPP sessions lost and connected again"
    );
    describe_counter!(
        CMPP_LOGIN_FAILURES_TOTAL,
        "CMPP logins refused, by channel and CONNECT_RESP status"
    );
    describe_histogram!(
        CMPP_SUBMIT_RESP_SECONDS,
        Unit::Seconds,
        "CMPP SUBMIT to SUBMIT_RESP latency"
    );
    describe_histogram!(
        CMPP_SUBMIT_TO_REPORT_SECONDS,
        Unit::Seconds,
        "CMPP SUBMIT to status report latency"
    );
    describe_counter!(CMPP_DELIVERS_TOTAL, "CMPP DELIVERs received, by kind");
    describe_gauge!(
        CHANNEL_PROBLEM,
        "1 while a channel has a configuration problem (e.g. refused credentials)"
    );
    describe_counter!(
        CALLBACKS_TOTAL,
        "Posts of events to apps' callback URLs, by outcome"
    );
}
