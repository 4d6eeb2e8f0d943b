//! The ISMG simulator against a CMPP client built on the codec, over real TCP on
//! 127.0.0.1: login, submission, status reports, MO, link maintenance and faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod client;
mod faults;
mod link;
mod login;
mod reports;
mod submit;
