//! The shared conformance suite (cohort_transport::conformance) run against every driver built
//! here, plus the checks only one driver can make.

use cohort_transport::conformance;
use cohort_transport::{MemoryNetwork, MmsgTransport, SocketConfig, Transport, TransportError};

/// Loopback without offloads (GSO and GRO are on by default; the offload runs set them).
fn loopback_template() -> SocketConfig {
    let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
    cfg.gso = false;
    cfg.gro = false;
    cfg
}

fn make_mmsg(cfg: SocketConfig) -> Result<Box<dyn Transport>, TransportError> {
    Ok(Box::new(MmsgTransport::open(&cfg)?))
}

#[test]
fn mmsg_driver_passes_conformance_without_offloads() {
    conformance::run_all(&make_mmsg, &loopback_template());
}

#[test]
fn mmsg_driver_passes_conformance_with_gso_and_gro() {
    let mut cfg = loopback_template();
    cfg.gso = true;
    cfg.gro = true;
    conformance::run_all(&make_mmsg, &cfg);
}

#[test]
fn mmsg_driver_passes_conformance_with_jumbo_datagrams_and_gso() {
    let mut cfg = loopback_template();
    cfg.datagram_bytes_max = 8_972; // a 9000 B MTU
    cfg.gso = true;
    cfg.gro = true;
    conformance::run_all(&make_mmsg, &cfg);
}

#[test]
fn memory_driver_passes_conformance() {
    let network = MemoryNetwork::new(7);
    let make = move |cfg: SocketConfig| -> Result<Box<dyn Transport>, TransportError> {
        Ok(Box::new(network.open(&cfg)?))
    };
    conformance::run_all(&make, &loopback_template());
}
