//! Black-box tests of the HTTP simulators over real sockets: each one speaks its
//! provider's token flow, send, error and receipt formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod control;
mod dingtalk;
mod feishu;
mod jpush;
mod jsms;
mod robot;
mod webhook;
mod wechat;
mod wecom;
