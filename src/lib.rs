//! umsd — a unified messaging dispatch daemon. This crate is the front door and the
//! wiring: configuration, the embedded PostgreSQL, the HTTP API, start-up and shutdown.
//! The engine (actors, domain, store) lives in `umsd-actors`.

pub mod config;
pub mod embedded_pg;
pub mod http;
pub mod server;
pub mod telemetry;
