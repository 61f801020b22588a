//! Rates over simulated time: every node's counters sampled at a fixed simulated interval,
//! kept as the last [`KEEP`] rates for sparklines, and the cluster's totals.

use std::collections::VecDeque;

use podnet_sim::world::World;

/// Rates kept per series.
pub const KEEP: usize = 240;

/// Cumulative counts of one node at one sample.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    rx: u64,
    tx: u64,
    drops: u64,
    underlay_bytes: u64,
}

/// One series of rates per simulated second, newest last.
#[derive(Clone, Debug, Default)]
pub struct Series(VecDeque<u64>);

impl Series {
    fn push(&mut self, v: u64) {
        if self.0.len() == KEEP {
            self.0.pop_front();
        }
        self.0.push_back(v);
    }

    /// The newest rate; 0 before the first sample.
    pub fn last(&self) -> u64 {
        self.0.back().copied().unwrap_or(0)
    }

    /// The newest `n` rates, oldest first.
    pub fn tail(&self, n: usize) -> Vec<u64> {
        let skip = self.0.len().saturating_sub(n);
        self.0.iter().skip(skip).copied().collect()
    }
}

/// The rates of one node.
#[derive(Clone, Debug, Default)]
pub struct NodeRates {
    last: Counts,
    pub rx_pps: Series,
    pub tx_pps: Series,
    pub drops_ps: Series,
    /// Bits per second through its underlay interface (both directions).
    pub underlay_bps: Series,
    /// Drops so far by reason at the last sample, most first (switch and underlay).
    pub drops: Vec<(String, u64)>,
}

/// Every node's rates and the totals.
pub struct History {
    interval_ns: u64,
    next_ns: u64,
    pub nodes: Vec<NodeRates>,
    pub packets_ps: Series,
    pub drops_ps: Series,
}

impl History {
    /// Samples every `interval_ns` of simulated time.
    pub fn new(world: &World, interval_ns: u64) -> History {
        History {
            interval_ns,
            next_ns: interval_ns,
            nodes: vec![NodeRates::default(); world.nodes().len()],
            packets_ps: Series::default(),
            drops_ps: Series::default(),
        }
    }

    /// When the next sample is due.
    pub fn next_ns(&self) -> u64 {
        self.next_ns
    }

    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// Takes the sample due at [`History::next_ns`]; the world must be at that time.
    pub fn sample(&mut self, world: &World) {
        let per_s = |d: u64| d.saturating_mul(1_000_000_000) / self.interval_ns;
        let mut sim_drops = vec![Vec::new(); world.underlay().members.len()];
        for (&(member, reason), &n) in world.sim_drops() {
            sim_drops[member].push((reason.as_str(), n));
        }
        let (mut total, mut dropped) = (0, 0);
        for (i, node) in world.nodes().iter().enumerate() {
            let c = node.switch.counters();
            let underlay = node.switch.port_counters(node.underlay).unwrap_or_default();
            let mut by: std::collections::BTreeMap<&str, u64> =
                c.drops.iter().map(|(&k, &n)| (k, n)).collect();
            for &(reason, n) in &sim_drops[node.member] {
                *by.entry(reason).or_default() += n;
            }
            let mut drops: Vec<(String, u64)> = by
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect();
            drops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let now = Counts {
                rx: c.rx_packets,
                tx: c.tx_packets,
                drops: drops.iter().map(|(_, n)| n).sum(),
                underlay_bytes: underlay.rx_bytes + underlay.tx_bytes,
            };
            let r = &mut self.nodes[i];
            r.drops = drops;
            // A restarted node's fresh switch counts from 0 again: no negative rates.
            let rx = now.rx.saturating_sub(r.last.rx);
            r.rx_pps.push(per_s(rx));
            r.tx_pps.push(per_s(now.tx.saturating_sub(r.last.tx)));
            let d = now.drops.saturating_sub(r.last.drops);
            r.drops_ps.push(per_s(d));
            r.underlay_bps.push(per_s(
                now.underlay_bytes.saturating_sub(r.last.underlay_bytes) * 8,
            ));
            r.last = now;
            total += rx;
            dropped += d;
        }
        self.packets_ps.push(per_s(total));
        self.drops_ps.push(per_s(dropped));
        self.next_ns += self.interval_ns;
    }
}
