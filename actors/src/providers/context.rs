//! What a provider client is built with besides its typed settings.

use actix::Addr;

use crate::domain::channel::ChannelCode;
use crate::receipts::Receipts;
use crate::store::Store;

/// A channel's running context, handed to its provider client on the channel's arbiter.
#[derive(Clone)]
pub struct ProviderContext {
    pub code: ChannelCode,
    /// Provider calls the sender keeps in flight at once: what connection pools are sized
    /// to.
    pub pool_size: usize,
    /// Extra trusted roots for HTTPS endpoints, beside the system's.
    pub tls_roots: Vec<reqwest::Certificate>,
    /// For providers whose delivery is a write (the inbox) or whose receipts are resumed
    /// from the database after a restart (pollers), and MO storage.
    pub store: Store,
    /// Where receipts a provider learns of (status reports, polls) go.
    pub receipts: Addr<Receipts>,
}
