//! Requests in flight: a stream's state and the commands host calls give it (`state`), and the
//! driver that runs it through the chain (`driver`, methods of a VM set).

mod driver;
mod state;

pub(crate) use state::{LocalReply, Stream};
