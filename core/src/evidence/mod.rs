//! Evidence outside the rows: the checkpoint writer, the copies of each checkpoint (files,
//! syslog, an HTTP witness) and the senders with their durable backlogs.

pub(crate) mod checkpoint_out;
pub mod checkpointer;
pub(crate) mod sink;
