//! Typed errors of the VIP layer. The daemon turns any of them into its `fault` state, so each one says what was being
//! done, on which interface, and why it failed.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::Vip;

/// What the VIP layer was doing when an error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VipAction {
    /// Opening the rtnetlink socket.
    OpenNetlink,
    /// Reading the interface (index, flags, hardware address).
    ReadLink,
    /// Listing the addresses of the interface.
    ListAddresses,
    /// Adding a VIP.
    AddAddress(Vip),
    /// Removing a VIP.
    RemoveAddress(Vip),
    /// Opening the AF_PACKET socket used for announcements.
    OpenPacketSocket,
    /// Sending a gratuitous ARP or unsolicited neighbour advertisement for a VIP.
    Announce(Vip),
    /// Adding or removing the local route that keeps a released VIP's connections served during a drain.
    DrainRoute(Vip),
}

impl fmt::Display for VipAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpenNetlink => f.write_str("open the rtnetlink socket"),
            Self::ReadLink => f.write_str("read the interface"),
            Self::ListAddresses => f.write_str("list addresses"),
            Self::AddAddress(vip) => write!(f, "add VIP {vip}"),
            Self::RemoveAddress(vip) => write!(f, "remove VIP {vip}"),
            Self::OpenPacketSocket => f.write_str("open an AF_PACKET socket"),
            Self::Announce(vip) => write!(f, "announce VIP {vip}"),
            Self::DrainRoute(vip) => write!(f, "route released VIP {vip} locally for the drain"),
        }
    }
}

/// Every way the VIP layer can fail. Cloneable so a background announcer can hand its last error to the status page.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum VipError {
    /// A VIP in the configuration is not usable (bad syntax, prefix out of range, multicast, unspecified).
    #[error("invalid VIP {input:?}: {reason}")]
    InvalidVip { input: String, reason: &'static str },
    /// The interface name cannot name a Linux interface.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidInterfaceName { name: String, reason: &'static str },
    /// The interface that should carry the VIPs does not exist (in this network namespace).
    #[error("cannot {action}: interface {interface:?} does not exist")]
    InterfaceNotFound {
        interface: String,
        action: VipAction,
    },
    /// The process lacks CAP_NET_ADMIN (addresses) or CAP_NET_RAW (announcements).
    #[error(
        "cannot {action} on {interface:?}: permission denied (run as root or grant CAP_NET_ADMIN and CAP_NET_RAW)"
    )]
    PermissionDenied {
        interface: String,
        action: VipAction,
    },
    /// The interface is administratively or operationally down, so nothing can be sent on it.
    #[error("cannot {action}: interface {interface:?} is down")]
    InterfaceDown {
        interface: String,
        action: VipAction,
    },
    /// The interface has no Ethernet hardware address, so no ARP / neighbour advertisement can be built for it.
    #[error("cannot {action}: interface {interface:?} has no Ethernet address")]
    NoHardwareAddress {
        interface: String,
        action: VipAction,
    },
    /// Any other error the kernel returned.
    #[error("cannot {action} on {interface:?}: {source}")]
    Kernel {
        interface: String,
        action: VipAction,
        #[source]
        source: Arc<io::Error>,
    },
    /// The netlink exchange itself went wrong (unexpected or undecodable message, closed connection).
    #[error("cannot {action} on {interface:?}: netlink: {detail}")]
    Netlink {
        interface: String,
        action: VipAction,
        detail: String,
    },
}

impl VipError {
    /// Classifies an OS error (errno) into the most specific variant.
    pub(crate) fn from_io(interface: &str, action: VipAction, err: io::Error) -> Self {
        let interface = interface.to_owned();
        match err.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Self::PermissionDenied { interface, action },
            Some(libc::ENODEV) | Some(libc::ENXIO) => Self::InterfaceNotFound { interface, action },
            Some(libc::ENETDOWN) => Self::InterfaceDown { interface, action },
            _ => Self::Kernel {
                interface,
                action,
                source: Arc::new(err),
            },
        }
    }

    /// Classifies an rtnetlink error: kernel NACKs become errno-based variants, the rest `Netlink`.
    pub(crate) fn from_netlink(interface: &str, action: VipAction, err: rtnetlink::Error) -> Self {
        match netlink_errno(&err) {
            Some(errno) => Self::from_io(interface, action, io::Error::from_raw_os_error(errno)),
            None => Self::Netlink {
                interface: interface.to_owned(),
                action,
                detail: err.to_string(),
            },
        }
    }
}

/// The positive errno of a kernel NACK, if the error is one.
pub(crate) fn netlink_errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() != 0 => Some(msg.raw_code().abs()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        let vip: Vip = "10.0.0.1".parse().unwrap();
        let e = VipError::from_io(
            "eth0",
            VipAction::AddAddress(vip),
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert!(matches!(e, VipError::PermissionDenied { .. }));
        assert!(e.to_string().contains("add VIP 10.0.0.1/32"), "{e}");
        assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
        let e = VipError::from_io(
            "eth9",
            VipAction::ReadLink,
            io::Error::from_raw_os_error(libc::ENODEV),
        );
        assert!(matches!(e, VipError::InterfaceNotFound { .. }));
        assert_eq!(
            e.to_string(),
            "cannot read the interface: interface \"eth9\" does not exist"
        );
        let e = VipError::from_io(
            "eth0",
            VipAction::Announce(vip),
            io::Error::from_raw_os_error(libc::ENETDOWN),
        );
        assert!(matches!(e, VipError::InterfaceDown { .. }));
        let e = VipError::from_io(
            "eth0",
            VipAction::ListAddresses,
            io::Error::from_raw_os_error(libc::ENOBUFS),
        );
        assert!(matches!(e, VipError::Kernel { .. }));
        assert!(std::error::Error::source(&e).is_some());
    }
}
