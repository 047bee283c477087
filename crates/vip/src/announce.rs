//! Announcing VIPs to the LAN: rounds of gratuitous ARP (IPv4) and unsolicited neighbour advertisements (IPv6).
//!
//! One round sends one frame per VIP. A burst is `count` rounds `spacing` apart, the first at once and the second
//! at most [`EARLY_REPEAT`] after it; after it an optional refresh sends one round every `refresh`. [`AnnounceSchedule`] is the timing, without clocks or sockets;
//! [`Announcer::start`] drives it on tokio and can be stopped at any time (when the node releases its VIPs).
//! [`AnnounceCounts`] counts the frames the kernel accepted, for `tandem_garp_sent_total`.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::frames::{self, ALL_NODES_MAC, ArpMode, BROADCAST_MAC};
use crate::packet::{ETH_P_ARP, ETH_P_IPV6, PacketSocket};
use crate::{Vip, VipAction, VipError, VipManager};

/// How VIPs are announced after they are added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Rounds in the burst that follows an acquire (default 5). 0 disables the burst.
    pub count: u32,
    /// Time between rounds of the burst (default 200 ms).
    pub spacing: Duration,
    /// Gratuitous ARP form (default request).
    pub arp_mode: ArpMode,
    /// After the burst, one more round every this long while the VIPs are held (default none).
    pub refresh: Option<Duration>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            count: 5,
            spacing: Duration::from_millis(200),
            arp_mode: ArpMode::Request,
            refresh: None,
        }
    }
}

/// The second round of a burst follows the first after at most this long. A neighbour that missed or ignored the first
/// announcement kept sending to the old holder's MAC until the next round: in the handovers drill one takeover in 160
/// cost the client 200 ms (the default spacing) after the old holder had removed the VIP.
pub const EARLY_REPEAT: Duration = Duration::from_millis(20);

/// When each announcement round is due, as a delay after the previous one. Pure: no clock, no socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceSchedule {
    count: u32,
    spacing: Duration,
    refresh: Option<Duration>,
}

impl AnnounceSchedule {
    /// The schedule of `config`.
    pub fn new(config: &AnnounceConfig) -> Self {
        Self {
            count: config.count,
            spacing: config.spacing,
            refresh: config.refresh,
        }
    }

    /// Delay before round `round` (0-based) counted from the previous round (from the start for round 0), or `None`
    /// when there is no such round. Round 0 is immediate; refresh rounds follow the burst for ever.
    pub fn delay_before(&self, round: u64) -> Option<Duration> {
        if round < u64::from(self.count) {
            Some(match round {
                0 => Duration::ZERO,
                1 => self.spacing.min(EARLY_REPEAT),
                _ => self.spacing,
            })
        } else {
            self.refresh
        }
    }
}

/// Announcement frames handed to the kernel successfully, by address family, since the [`Announcer`] was made.
/// Clones share the counts, so a copy kept elsewhere reads them without locking whoever owns the announcer.
#[derive(Debug, Clone, Default)]
pub struct AnnounceCounts {
    /// Gratuitous ARP frames (IPv4 VIPs).
    ipv4: Arc<AtomicU64>,
    /// Unsolicited neighbour advertisements (IPv6 VIPs).
    ipv6: Arc<AtomicU64>,
}

impl AnnounceCounts {
    /// Gratuitous ARP frames sent (both frames of the `Both` form count).
    pub fn ipv4(&self) -> u64 {
        self.ipv4.load(Ordering::Relaxed)
    }

    /// Unsolicited neighbour advertisements sent.
    pub fn ipv6(&self) -> u64 {
        self.ipv6.load(Ordering::Relaxed)
    }

    fn count(&self, vip: &Vip) {
        let family = if vip.addr().is_ipv4() {
            &self.ipv4
        } else {
            &self.ipv6
        };
        family.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends announcements for VIPs on the manager's interface. Clones share one packet socket and the counts.
#[derive(Debug, Clone)]
pub struct Announcer {
    manager: Arc<VipManager>,
    /// Opened on first use and kept: closing an AF_PACKET socket waits for an RCU grace period (~10 ms), which a
    /// takeover should not pay on every round.
    socket: Arc<Mutex<Option<Arc<PacketSocket>>>>,
    counts: AnnounceCounts,
}

impl Announcer {
    /// An announcer for the interface of `manager` (which it uses to read the interface index and MAC).
    pub fn new(manager: Arc<VipManager>) -> Self {
        Self {
            manager,
            socket: Arc::new(Mutex::new(None)),
            counts: AnnounceCounts::default(),
        }
    }

    /// The frames this announcer (and its clones) got the kernel to take so far.
    pub fn counts(&self) -> AnnounceCounts {
        self.counts.clone()
    }

    fn socket(&self) -> Result<Arc<PacketSocket>, VipError> {
        let mut cached = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(socket) = cached.as_ref() {
            return Ok(Arc::clone(socket));
        }
        let socket = PacketSocket::open().map_err(|e| {
            VipError::from_io(self.manager.interface(), VipAction::OpenPacketSocket, e)
        })?;
        let socket = Arc::new(socket);
        *cached = Some(Arc::clone(&socket));
        Ok(socket)
    }

    /// Sends one round: gratuitous ARP (one frame, two in `Both` mode) per IPv4 VIP and one unsolicited NA per IPv6
    /// VIP, with the interface's current MAC. Returns the number of frames sent: 0 on an interface that does not
    /// resolve neighbours (no MAC, IFF_NOARP, not Ethernet), where there is nobody to tell. Stops at the first
    /// failure.
    pub async fn announce_once(&self, vips: &[Vip], arp_mode: ArpMode) -> Result<usize, VipError> {
        let interface = self.manager.interface();
        let first = vips.first().copied();
        let link = self.manager.link().await?;
        let Some(mac) = link.mac.filter(|_| link.resolves_neighbours) else {
            tracing::debug!(
                interface,
                "interface does not resolve neighbours: nothing to announce"
            );
            return Ok(0);
        };
        if vips.is_empty() {
            return Ok(0);
        }
        if !link.up {
            let action = first.map_or(VipAction::OpenPacketSocket, VipAction::Announce);
            return Err(VipError::InterfaceDown {
                interface: interface.to_owned(),
                action,
            });
        }
        let socket = self.socket()?;
        send_round(
            vips,
            mac,
            arp_mode,
            &self.counts,
            |destination, ethertype, frame| socket.send(link.index, destination, ethertype, frame),
        )
        .map_err(|(vip, e)| VipError::from_io(interface, VipAction::Announce(vip), e))
    }

    /// Starts announcing `vips` on `config`'s schedule. The first round is sent before this returns, so a failure to
    /// announce at all (permission, interface missing or down) comes back here; later rounds run in the background,
    /// log their failures and keep the last one in [`Announcement::last_error`].
    pub async fn start(
        &self,
        vips: Vec<Vip>,
        config: &AnnounceConfig,
    ) -> Result<Announcement, VipError> {
        let schedule = AnnounceSchedule::new(config);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let mut next_round = 0;
        // Round 1 is spaced from round 0, which is sent now.
        if schedule.delay_before(0) == Some(Duration::ZERO) {
            self.announce_once(&vips, config.arp_mode).await?;
            lock(&progress).rounds_sent = 1;
            next_round = 1;
        }
        let task = tokio::spawn(run_schedule(
            self.clone(),
            vips,
            config.arp_mode,
            schedule,
            next_round,
            Arc::clone(&progress),
        ));
        Ok(Announcement { task, progress })
    }
}

/// One round's frames for `vips` from `mac`, each handed to `send` (destination MAC, EtherType, frame) and counted
/// in `counts` once `send` succeeds. Returns the number sent, or the VIP whose frame failed and why (the frames
/// before it stay sent and counted).
fn send_round(
    vips: &[Vip],
    mac: [u8; 6],
    arp_mode: ArpMode,
    counts: &AnnounceCounts,
    mut send: impl FnMut([u8; 6], u16, &[u8]) -> io::Result<()>,
) -> Result<usize, (Vip, io::Error)> {
    let mut sent = 0;
    for vip in vips {
        let (frames, destination, ethertype) = match vip.addr() {
            IpAddr::V4(addr) => (
                frames::gratuitous_arps(mac, addr, arp_mode),
                BROADCAST_MAC,
                ETH_P_ARP,
            ),
            IpAddr::V6(addr) => (
                vec![frames::unsolicited_na(mac, addr)],
                ALL_NODES_MAC,
                ETH_P_IPV6,
            ),
        };
        for frame in &frames {
            send(destination, ethertype, frame).map_err(|e| (*vip, e))?;
            counts.count(vip);
            sent += 1;
        }
    }
    Ok(sent)
}

/// Background rounds from `round` on, until the schedule ends or the task is aborted.
async fn run_schedule(
    announcer: Announcer,
    vips: Vec<Vip>,
    arp_mode: ArpMode,
    schedule: AnnounceSchedule,
    mut round: u64,
    progress: Arc<Mutex<Progress>>,
) {
    // Deadlines are absolute so the time spent sending does not stretch the spacing round after round.
    let mut due = tokio::time::Instant::now();
    while let Some(delay) = schedule.delay_before(round) {
        due += delay;
        tokio::time::sleep_until(due).await;
        match announcer.announce_once(&vips, arp_mode).await {
            Ok(_) => lock(&progress).rounds_sent += 1,
            Err(e) => {
                tracing::error!(error = %e, round, "VIP announcement failed");
                lock(&progress).last_error = Some(e);
            }
        }
        round += 1;
    }
}

#[derive(Debug, Default)]
struct Progress {
    rounds_sent: u64,
    last_error: Option<VipError>,
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    // The guarded data are two plain counters: still meaningful after a panic elsewhere.
    progress.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running announcement. Dropping it or calling [`Announcement::stop`] stops further rounds at once.
#[derive(Debug)]
pub struct Announcement {
    task: JoinHandle<()>,
    progress: Arc<Mutex<Progress>>,
}

impl Announcement {
    /// Stops sending announcements.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Whether all scheduled rounds are done (never, with a refresh, until stopped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Rounds that went out completely so far.
    pub fn rounds_sent(&self) -> u64 {
        lock(&self.progress).rounds_sent
    }

    /// The last failure of a background round, if any.
    pub fn last_error(&self) -> Option<VipError> {
        lock(&self.progress).last_error.clone()
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(schedule: &AnnounceSchedule, rounds: u64) -> Vec<Option<u64>> {
        (0..rounds)
            .map(|r| schedule.delay_before(r).map(|d| d.as_millis() as u64))
            .collect()
    }

    #[test]
    fn default_burst_is_five_rounds_200ms_apart_first_at_once_second_20ms_after() {
        let schedule = AnnounceSchedule::new(&AnnounceConfig::default());
        assert_eq!(
            delays(&schedule, 7),
            [
                Some(0),
                Some(20),
                Some(200),
                Some(200),
                Some(200),
                None,
                None
            ]
        );
    }

    #[test]
    fn refresh_follows_the_burst() {
        let config = AnnounceConfig {
            count: 2,
            spacing: Duration::from_millis(50),
            refresh: Some(Duration::from_secs(60)),
            ..AnnounceConfig::default()
        };
        let schedule = AnnounceSchedule::new(&config);
        assert_eq!(
            delays(&schedule, 5),
            [Some(0), Some(20), Some(60_000), Some(60_000), Some(60_000)]
        );
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn vips(addrs: &[&str]) -> Vec<Vip> {
        addrs.iter().map(|a| a.parse().expect("test VIP")).collect()
    }

    #[test]
    fn every_frame_the_kernel_takes_is_counted_by_family() {
        let counts = AnnounceCounts::default();
        let vips = vips(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]);
        let mut seen = Vec::new();
        let sent = send_round(&vips, MAC, ArpMode::Both, &counts, |dest, ethertype, _| {
            seen.push((dest, ethertype));
            Ok(())
        })
        .expect("fake sender never fails");
        // Both ARP forms per IPv4 VIP, one NA for the IPv6 one.
        assert_eq!(sent, 5);
        assert_eq!(seen.len(), 5);
        assert_eq!((counts.ipv4(), counts.ipv6()), (4, 1));
        // A second round adds to the same counts, and clones read them.
        let copy = counts.clone();
        send_round(&vips, MAC, ArpMode::Request, &counts, |_, _, _| Ok(())).expect("second round");
        assert_eq!((copy.ipv4(), copy.ipv6()), (6, 2));
    }

    #[test]
    fn a_frame_the_kernel_refuses_is_not_counted() {
        let counts = AnnounceCounts::default();
        let vips = vips(&["192.0.2.1", "2001:db8::1", "192.0.2.2"]);
        let mut calls = 0;
        let failed = send_round(&vips, MAC, ArpMode::Request, &counts, |_, _, _| {
            calls += 1;
            if calls == 2 {
                Err(io::Error::from_raw_os_error(libc::ENOBUFS))
            } else {
                Ok(())
            }
        })
        .expect_err("second frame fails");
        assert_eq!(failed.0, vips[1]);
        // The first went out; the refused one is not counted and the round stops there.
        assert_eq!((counts.ipv4(), counts.ipv6()), (1, 0));
        assert_eq!(calls, 2);
    }

    #[test]
    fn no_burst_means_refresh_only_or_nothing() {
        let mut config = AnnounceConfig {
            count: 0,
            ..AnnounceConfig::default()
        };
        assert_eq!(delays(&AnnounceSchedule::new(&config), 2), [None, None]);
        config.refresh = Some(Duration::from_secs(30));
        assert_eq!(
            delays(&AnnounceSchedule::new(&config), 2),
            [Some(30_000), Some(30_000)]
        );
    }
}
