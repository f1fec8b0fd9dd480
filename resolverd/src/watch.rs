//! Live updates (R8, R22): inotify events on the watched network directories and host
//! resolv.conf directories, applied one file at a time.

use std::sync::Arc;

use futures_util::StreamExt;
use inotify::{EventStream, Inotify};

use crate::state::Resolver;

pub fn init(st: &Resolver) -> std::io::Result<EventStream<Vec<u8>>> {
    let stream = Inotify::init()?.into_event_stream(vec![0u8; 64 * 1024])?;
    st.set_watches(stream.watches());
    Ok(stream)
}

pub async fn run(mut events: EventStream<Vec<u8>>, st: Arc<Resolver>) {
    while let Some(ev) = events.next().await {
        match ev {
            Ok(ev) => st.apply_event(&ev.wd, ev.mask, ev.name.as_deref()),
            Err(e) => tracing::error!("inotify: {e}"),
        }
    }
}
