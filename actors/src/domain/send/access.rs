//! Which channels a sending app may use, as validation sees them.

use super::error::FieldError;
use crate::domain::ChannelType;

/// Whether an app may send on a channel code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAccess {
    /// No channel with that code, or not granted to this app.
    Unknown,
    /// Switched off by the operator or by the app.
    Disabled,
    Usable(ChannelType),
}

/// What validation needs to know about the calling app's channels.
pub trait ChannelLookup {
    fn access(&self, code: &str) -> ChannelAccess;
}

pub fn usable(
    channels: &dyn ChannelLookup,
    code: &str,
    field: &str,
) -> Result<ChannelType, FieldError> {
    match channels.access(code) {
        ChannelAccess::Usable(ty) => Ok(ty),
        ChannelAccess::Unknown => Err(FieldError::new(
            "unknown_channel",
            field,
            format!("no channel `{code}` is granted to this app"),
        )),
        ChannelAccess::Disabled => Err(FieldError::new(
            "channel_disabled",
            field,
            format!("channel `{code}` is switched off"),
        )),
    }
}
