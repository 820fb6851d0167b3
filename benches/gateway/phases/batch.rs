//! The batch phase `gateway_batch`: one fresh gateway, a few keep-alive connections each with
//! one batch of unique events in flight at `POST /v1/topics/{topic}/events:batch`, so that about
//! `window` events are outstanding, as in the raw producer phase at that window.

use crate::load::batch::{BatchLoad, run_batches};
use crate::load::pacing::{Pace, Tickets};
use crate::phases::Run;
use crate::results::measure;

/// Connections, each with one batch of `batch_events` in flight, for about `window` events
/// outstanding (at least one).
pub(crate) fn batch_connections(window: usize, batch_events: usize) -> usize {
    ((window as f64 / batch_events.max(1) as f64).round() as usize).max(1)
}

impl Run {
    /// `gateway_batch` at about `window` events outstanding: throughput in events, latency of
    /// the whole batch request, the CPU per event of every process.
    pub(crate) async fn gateway_batch(&mut self, window_size: usize) -> anyhow::Result<()> {
        let phase = "gateway_batch";
        let batch_events = self.args.batch_events;
        let connections = batch_connections(window_size, batch_events);
        let (topic, prefix, gateway) = self.start_gateway(phase, &[]).await?;
        let window = self.window();
        let load = BatchLoad {
            addr: gateway.addr,
            topic: topic.clone(),
            events: self.uuid_events(&topic),
            connections,
            batch_events,
            tickets: Tickets::new(Pace::Closed, window),
        };
        let measured = measure(self.probes(Some(&gateway)), window, run_batches(load)).await?;
        let outstanding = connections * batch_events;
        let mut result = self.result(phase, outstanding, Pace::Closed, Some(&gateway), &measured);
        result.batch_events = Some(batch_events);
        self.stop_gateway(gateway, &topic, &prefix).await?;
        self.push(result)
    }
}
