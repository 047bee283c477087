//! `VipManager`: adds, removes and lists VIPs on one interface through rtnetlink.
//!
//! Every call resolves the interface by name again, so a bond or VLAN that is re-created (new index) keeps working.
//! Add and remove are idempotent: an address already present on add (EEXIST) or already absent on remove
//! (EADDRNOTAVAIL) is success, reported through [`AddOutcome`] / [`RemoveOutcome`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{AddressMessageBuilder, Handle, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::error::netlink_errno;
use crate::{Vip, VipAction, VipError};

/// Linux limits interface names to IFNAMSIZ - 1 bytes.
const MAX_IFNAME_LEN: usize = 15;

/// What the kernel says about the interface that carries the VIPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Ethernet hardware address, when the link is an Ethernet-like link with one.
    pub mac: Option<[u8; 6]>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Whether the link resolves neighbours (Ethernet, no IFF_NOARP), i.e. whether announcements make sense.
    pub resolves_neighbours: bool,
}

/// Result of a successful [`VipManager::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The address was added now.
    Added,
    /// The address was already on the interface.
    AlreadyPresent,
}

/// Result of a successful [`VipManager::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The address was removed now.
    Removed,
    /// The address was not on the interface.
    NotPresent,
}

/// Adds and removes VIPs on one named interface. Create it inside a tokio runtime: it spawns the netlink
/// connection task, which stops when the manager is dropped.
#[derive(Debug)]
pub struct VipManager {
    interface: String,
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for VipManager {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl VipManager {
    /// Opens an rtnetlink connection for `interface`. The interface need not exist yet: each operation looks it up
    /// and reports [`VipError::InterfaceNotFound`] when it is missing.
    ///
    /// Must be called inside a tokio runtime (an error otherwise). The socket lives in the network namespace of the
    /// calling thread.
    pub fn new(interface: &str) -> Result<Self, VipError> {
        validate_interface_name(interface)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| VipError::Netlink {
            interface: interface.to_owned(),
            action: VipAction::OpenNetlink,
            detail: "VipManager::new must be called inside a tokio runtime".to_owned(),
        })?;
        // Entering the runtime: the netlink socket registers with its reactor.
        let _guard = runtime.enter();
        let (connection, handle, _messages) = rtnetlink::new_connection()
            .map_err(|e| VipError::from_io(interface, VipAction::OpenNetlink, e))?;
        let connection = runtime.spawn(connection);
        Ok(Self {
            interface: interface.to_owned(),
            handle,
            connection,
        })
    }

    /// The interface this manager works on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Reads the interface: index, hardware address, up/down and whether it does ARP / neighbour discovery.
    pub async fn link(&self) -> Result<LinkInfo, VipError> {
        let msg = self
            .handle
            .link()
            .get()
            .match_name(self.interface.clone())
            .execute()
            .try_next()
            .await
            .map_err(|e| self.netlink_error(VipAction::ReadLink, e))?
            .ok_or_else(|| VipError::InterfaceNotFound {
                interface: self.interface.clone(),
                action: VipAction::ReadLink,
            })?;
        Ok(link_info(&msg))
    }

    /// Adds `vip` to the interface. IPv6 VIPs are added with IFA_F_NODAD so they are usable at once (the peer
    /// just dropped the address; waiting for duplicate address detection would only lengthen the outage).
    pub async fn add(&self, vip: &Vip) -> Result<AddOutcome, VipError> {
        let index = self.index(VipAction::AddAddress(*vip)).await?;
        self.add_on(index, vip).await
    }

    /// Removes `vip` (same address and prefix length) from the interface. An address with another prefix length is
    /// left alone: it is not ours.
    pub async fn remove(&self, vip: &Vip) -> Result<RemoveOutcome, VipError> {
        let index = self.index(VipAction::RemoveAddress(*vip)).await?;
        self.remove_on(index, vip).await
    }

    /// Adds every one of `vips`, all requests in flight at once (a takeover should not pay one round trip per VIP).
    /// Returns one result per VIP, in order.
    pub async fn add_all(&self, vips: &[Vip]) -> Vec<Result<AddOutcome, VipError>> {
        let Some(vip) = vips.first() else {
            return Vec::new();
        };
        match self.index(VipAction::AddAddress(*vip)).await {
            Ok(index) => {
                futures::future::join_all(vips.iter().map(|vip| self.add_on(index, vip))).await
            }
            Err(e) => vips.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Removes every one of `vips`, all requests in flight at once. Returns one result per VIP, in order.
    pub async fn remove_all(&self, vips: &[Vip]) -> Vec<Result<RemoveOutcome, VipError>> {
        let Some(vip) = vips.first() else {
            return Vec::new();
        };
        match self.index(VipAction::RemoveAddress(*vip)).await {
            Ok(index) => {
                futures::future::join_all(vips.iter().map(|vip| self.remove_on(index, vip))).await
            }
            Err(e) => vips.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Keeps accepting `vips` locally once their addresses are gone ("AnyIP"): a local route each, through `lo`
    /// in the local table at metric [`DRAIN_ROUTE_METRIC`] (the address's own local route has metric 0). The old
    /// holder of a drained handover serves its connections in flight this way while `ip addr` shows the VIPs
    /// gone; the kernel accepts replies from a source address that is local by route. Idempotent.
    pub async fn add_drain_routes(&self, vips: &[Vip]) -> Result<(), VipError> {
        for vip in vips {
            match self.handle.route().add(drain_route(vip)).execute().await {
                Ok(()) => {}
                Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.netlink_error(VipAction::DrainRoute(*vip), e)),
            }
        }
        Ok(())
    }

    /// Removes the routes of [`Self::add_drain_routes`]; absent ones are fine. Every VIP is attempted.
    pub async fn remove_drain_routes(&self, vips: &[Vip]) -> Result<(), VipError> {
        let mut first_error = None;
        for vip in vips {
            match self.handle.route().del(drain_route(vip)).execute().await {
                Ok(()) => {}
                Err(e) if matches!(netlink_errno(&e), Some(libc::ESRCH | libc::ENOENT)) => {}
                Err(e) => {
                    first_error.get_or_insert(self.netlink_error(VipAction::DrainRoute(*vip), e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn add_on(&self, index: u32, vip: &Vip) -> Result<AddOutcome, VipError> {
        let mut request = self
            .handle
            .address()
            .add(index, vip.addr(), vip.prefix_len());
        if vip.addr().is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => Ok(AddOutcome::Added),
            Err(e) if netlink_errno(&e) == Some(libc::EEXIST) => Ok(AddOutcome::AlreadyPresent),
            Err(e) => Err(self.netlink_error(VipAction::AddAddress(*vip), e)),
        }
    }

    async fn remove_on(&self, index: u32, vip: &Vip) -> Result<RemoveOutcome, VipError> {
        match self
            .handle
            .address()
            .del(address_message(index, vip))
            .execute()
            .await
        {
            Ok(()) => Ok(RemoveOutcome::Removed),
            Err(e) if netlink_errno(&e) == Some(libc::EADDRNOTAVAIL) => {
                Ok(RemoveOutcome::NotPresent)
            }
            Err(e) => Err(self.netlink_error(VipAction::RemoveAddress(*vip), e)),
        }
    }

    /// Which of `vips` are on the interface now (same address and prefix length), in the order given.
    pub async fn held(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let present = self.addresses().await?;
        Ok(vips
            .iter()
            .filter(|vip| present.contains(vip))
            .copied()
            .collect())
    }

    /// Removes every one of `vips` found on the interface and returns those it removed. A node that is not active
    /// calls this at start-up to drop VIPs left behind by a crash of an earlier run.
    pub async fn remove_stale(&self, vips: &[Vip]) -> Result<Vec<Vip>, VipError> {
        let held = self.held(vips).await?;
        let mut removed = Vec::new();
        for (vip, outcome) in held.iter().zip(self.remove_all(&held).await) {
            if outcome? == RemoveOutcome::Removed {
                tracing::warn!(interface = %self.interface, %vip, "removed a stale VIP left by an earlier run");
                removed.push(*vip);
            }
        }
        Ok(removed)
    }

    /// All addresses on the interface, as VIP values (address + prefix length).
    async fn addresses(&self) -> Result<Vec<Vip>, VipError> {
        let index = self.index(VipAction::ListAddresses).await?;
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.netlink_error(VipAction::ListAddresses, e))?;
        Ok(messages.iter().filter_map(message_vip).collect())
    }

    async fn index(&self, action: VipAction) -> Result<u32, VipError> {
        match self.link().await {
            Ok(link) => Ok(link.index),
            // Report the failure against what the caller was doing, not the internal lookup.
            Err(VipError::InterfaceNotFound { interface, .. }) => {
                Err(VipError::InterfaceNotFound { interface, action })
            }
            Err(VipError::PermissionDenied { interface, .. }) => {
                Err(VipError::PermissionDenied { interface, action })
            }
            Err(e) => Err(e),
        }
    }

    fn netlink_error(&self, action: VipAction, e: rtnetlink::Error) -> VipError {
        VipError::from_netlink(&self.interface, action, e)
    }
}

pub(crate) fn validate_interface_name(name: &str) -> Result<(), VipError> {
    let invalid = |reason| VipError::InvalidInterfaceName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(invalid("longer than 15 bytes"));
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
        || name == "."
        || name == ".."
    {
        return Err(invalid("contains '/', whitespace or NUL, or is '.' / '..'"));
    }
    Ok(())
}

/// The metric of the drain routes: tells them apart from the local route the kernel adds with each address.
pub const DRAIN_ROUTE_METRIC: u32 = 7778;

/// The loopback interface's index, the same in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// `local VIP dev lo table local metric DRAIN_ROUTE_METRIC`.
fn drain_route(vip: &Vip) -> RouteMessage {
    let mut route = match vip.addr() {
        IpAddr::V4(addr) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(addr, 32)
            .build(),
        IpAddr::V6(addr) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(addr, 128)
            .build(),
    };
    route.header.table = libc::RT_TABLE_LOCAL;
    route.header.kind = RouteType::Local;
    route.header.scope = RouteScope::Host;
    route.header.protocol = RouteProtocol::Static;
    route.attributes.extend([
        RouteAttribute::Table(u32::from(libc::RT_TABLE_LOCAL)),
        RouteAttribute::Oif(LOOPBACK_INDEX),
        RouteAttribute::Priority(DRAIN_ROUTE_METRIC),
    ]);
    route
}

/// The message that names exactly `vip` on `index`, for deletion.
fn address_message(index: u32, vip: &Vip) -> AddressMessage {
    match vip.addr() {
        IpAddr::V4(addr) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr, vip.prefix_len())
            .build(),
        IpAddr::V6(addr) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(addr, vip.prefix_len())
            .build(),
    }
}

/// The local address of a kernel address message (IFA_LOCAL, else IFA_ADDRESS) with its prefix length.
fn message_vip(msg: &AddressMessage) -> Option<Vip> {
    let mut address = None;
    for attribute in &msg.attributes {
        match attribute {
            AddressAttribute::Local(ip) => address = Some(*ip),
            AddressAttribute::Address(ip) if address.is_none() => address = Some(*ip),
            _ => {}
        }
    }
    let family_matches = match address? {
        IpAddr::V4(_) => msg.header.family == AddressFamily::Inet,
        IpAddr::V6(_) => msg.header.family == AddressFamily::Inet6,
    };
    if !family_matches {
        return None;
    }
    Vip::new(address?, msg.header.prefix_len).ok()
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mac = msg.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    // An all-zero address is what loopback and some virtual links report: nothing to announce with.
    let mac = mac.filter(|mac| mac.iter().any(|b| *b != 0));
    let ethernet = msg.header.link_layer_type == LinkLayerType::Ether;
    LinkInfo {
        index: msg.header.index,
        mac,
        up: msg.header.flags.contains(LinkFlags::Up),
        resolves_neighbours: ethernet
            && mac.is_some()
            && !msg.header.flags.contains(LinkFlags::Noarp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let e = VipManager::new("eth0").unwrap_err();
        assert!(e.to_string().contains("tokio runtime"), "{e}");
    }

    #[test]
    fn interface_names() {
        for good in ["eth0", "bond0.100", "enp0s31f6", "a", "veth-tnd-12345"] {
            validate_interface_name(good).unwrap();
        }
        for bad in ["", "this-name-is-too-long", "a/b", "a b", ".", "..", "x\0"] {
            assert!(
                matches!(
                    validate_interface_name(bad),
                    Err(VipError::InvalidInterfaceName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kernel_messages_become_vips() {
        let vip: Vip = "10.1.2.3/24".parse().unwrap();
        let msg = address_message(7, &vip);
        assert_eq!(msg.header.index, 7);
        assert_eq!(message_vip(&msg), Some(vip));
        let vip6: Vip = "2001:db8::5".parse().unwrap();
        assert_eq!(message_vip(&address_message(7, &vip6)), Some(vip6));
        assert_eq!(message_vip(&AddressMessage::default()), None);
    }
}
