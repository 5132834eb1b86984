//! Where a node's virtual IPs live. A stack network's subnet is split in
//! two: containers get addresses from the lower half, and the upper half
//! holds the node's virtual IPs, one per service a container of the stack
//! may name (`berth_core::discovery`): number `n` is the `n`-th address of
//! the upper half. The agent assigns such an address to the network's
//! bridge when a container is about to use it, and the node proxy listens
//! there on the service's ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The virtual IPs of one stack network on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipRange {
    /// The host interface of the network, where the addresses are assigned.
    pub bridge: String,
    /// The upper half of the network's subnet.
    pub block: Ipv4Net,
}

/// The node's stack networks with virtual IPs, by stack.
pub type VipRanges = BTreeMap<String, VipRange>;

/// Subnets narrower than this are not split: too few addresses to share.
pub const MAX_SPLIT_PREFIX: u8 = 28;

impl VipRange {
    /// The address of virtual IP number `number`, if the block has room for
    /// it (the block's first and last addresses are never used).
    pub fn address(&self, number: u32) -> Option<Ipv4Addr> {
        let first = u32::from(self.block.network());
        let address = first.checked_add(number)?;
        (number > 0 && address < u32::from(self.block.broadcast())).then(|| Ipv4Addr::from(address))
    }
}

/// The two halves of `subnet`: where containers get their addresses, and
/// the virtual IPs' block. `None` for a subnet too narrow to split.
pub fn split(subnet: Ipv4Net) -> Option<(Ipv4Net, Ipv4Net)> {
    if subnet.prefix_len() > MAX_SPLIT_PREFIX {
        return None;
    }
    let mut halves = subnet.subnets(subnet.prefix_len() + 1).ok()?;
    Some((halves.next()?, halves.next()?))
}

/// The virtual IPs' block of a network created by [`split`]: the upper half
/// of `subnet`, when containers are confined to `ip_range`, its lower half.
pub fn block_of(subnet: Ipv4Net, ip_range: Option<Ipv4Net>) -> Option<Ipv4Net> {
    let (lower, upper) = split(subnet)?;
    (ip_range == Some(lower)).then_some(upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_subnet_splits_into_a_container_half_and_a_virtual_ip_half() {
        assert_eq!(split(net("172.20.0.0/16")), Some((net("172.20.0.0/17"), net("172.20.128.0/17"))));
        assert_eq!(split(net("192.168.16.0/20")), Some((net("192.168.16.0/21"), net("192.168.24.0/21"))));
        assert_eq!(split(net("10.0.0.0/29")), None);
    }

    #[test]
    fn numbers_map_inside_the_block_and_never_onto_its_edges() {
        let range = VipRange { bridge: "br-1".into(), block: net("172.20.128.0/17") };
        assert_eq!(range.address(1), Some(Ipv4Addr::new(172, 20, 128, 1)));
        assert_eq!(range.address(300), Some(Ipv4Addr::new(172, 20, 129, 44)));
        assert_eq!(range.address(0), None);
        assert_eq!(range.address(32_767), None, "the broadcast address");
        assert_eq!(range.address(u32::MAX), None);
    }

    #[test]
    fn only_a_network_split_by_berth_has_a_block() {
        let subnet = net("172.20.0.0/16");
        assert_eq!(block_of(subnet, Some(net("172.20.0.0/17"))), Some(net("172.20.128.0/17")));
        assert_eq!(block_of(subnet, None), None);
        assert_eq!(block_of(subnet, Some(net("172.20.0.0/24"))), None);
    }
}
