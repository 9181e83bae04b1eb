//! Checks only the sendmmsg/recvmmsg driver can make: that GSO and GRO are really used when
//! the kernel has them, truncation is a counted drop, and what this machine grants.

use std::net::SocketAddr;

use cohort_transport::conformance::{assert_same_datagrams, payload, recv_from, send_all};
use cohort_transport::{
    open, Dest, DriverChoice, MmsgTransport, Offloads, SendBatch, SocketConfig, Transport,
};

fn config(gso: bool, gro: bool) -> SocketConfig {
    let mut cfg = SocketConfig::unicast("127.0.0.1:0".parse().unwrap());
    cfg.gso = gso;
    cfg.gro = gro;
    cfg
}

fn fill_equal(batch: &mut SendBatch, dest: Dest, count: u32, len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let buf = batch.alloc(dest, len).unwrap();
            payload(i, len, buf);
            buf.to_vec()
        })
        .collect()
}

#[test]
fn reports_what_the_kernel_grants() {
    let t = MmsgTransport::open(&config(true, true)).unwrap();
    let o = t.opened();
    eprintln!(
        "granted SO_RCVBUF {} B, SO_SNDBUF {} B, GSO available {}, GRO available {}",
        o.recv_buffer_bytes, o.send_buffer_bytes, o.gso_available, o.gro_available
    );
    assert_eq!(t.gso_enabled(), o.gso_available);
    assert_eq!(t.gro_enabled(), o.gro_available);
    let plain = MmsgTransport::open(&config(false, false)).unwrap();
    assert!(!plain.gso_enabled() && !plain.gro_enabled());
    // The trait says the same (what a node reports as its offloads).
    assert_eq!(
        t.offloads_in_use(),
        Offloads {
            gso: o.gso_available,
            gro: o.gro_available
        }
    );
    assert_eq!(plain.offloads_in_use(), Offloads::default());
    let gso_only = MmsgTransport::open(&config(true, false)).unwrap();
    assert_eq!(
        gso_only.offloads_in_use(),
        Offloads {
            gso: o.gso_available,
            gro: false
        }
    );
}

#[test]
fn gso_sends_equal_runs_as_segmented_messages_and_gro_receives_them_coalesced() {
    let mut receiver = MmsgTransport::open(&config(false, true)).unwrap();
    let mut sender = MmsgTransport::open(&config(true, false)).unwrap();
    if !sender.gso_enabled() || !receiver.gro_enabled() {
        eprintln!("!!!!! UDP GSO/GRO not available on this kernel: offload use NOT tested");
        return;
    }
    let to = Dest::Addr(receiver.local_addr());
    let mut batch = SendBatch::new(64, 1472);
    // 50 x 1200 B + 77 B = 60077 B: under the 65507 B a GSO send may carry.
    let mut sent = fill_equal(&mut batch, to, 50, 1200);
    let tail = batch.alloc(to, 77).unwrap();
    payload(999, 77, tail);
    sent.push(tail.to_vec());
    send_all(&mut sender, &mut batch);
    assert_eq!(
        sender.offload_stats().gso_messages,
        1,
        "51 datagrams of one run go as one GSO message"
    );
    let got = recv_from(&mut receiver, sender.local_addr(), sent.len());
    assert_same_datagrams("gso -> gro", sent, got);
    assert!(
        receiver.offload_stats().gro_coalesced_buffers >= 1,
        "a GSO train on loopback reaches a UDP_GRO socket coalesced"
    );
    assert_eq!(receiver.stats().datagrams_received, 51);
}

#[test]
fn gso_train_is_split_for_a_receiver_without_gro() {
    let mut receiver = MmsgTransport::open(&config(false, false)).unwrap();
    let mut sender = MmsgTransport::open(&config(true, false)).unwrap();
    let to = Dest::Addr(receiver.local_addr());
    let mut batch = SendBatch::new(64, 1472);
    let sent = fill_equal(&mut batch, to, 40, 1472);
    send_all(&mut sender, &mut batch);
    let got = recv_from(&mut receiver, sender.local_addr(), sent.len());
    assert_same_datagrams("gso -> plain", sent, got);
    assert_eq!(receiver.offload_stats().gro_coalesced_buffers, 0);
}

#[test]
fn gso_fan_out_sends_one_segmented_message_per_peer() {
    let mut r1 = MmsgTransport::open(&config(false, true)).unwrap();
    let mut r2 = MmsgTransport::open(&config(false, false)).unwrap();
    let mut cfg = config(true, false);
    cfg.group = cohort_transport::GroupMode::UnicastFanOut {
        peers: vec![r1.local_addr(), r2.local_addr()],
    };
    let mut sender = MmsgTransport::open(&cfg).unwrap();
    if !sender.gso_enabled() {
        eprintln!("!!!!! UDP GSO not available on this kernel: GSO fan-out NOT tested");
        return;
    }
    let mut batch = SendBatch::new(64, 1472);
    let sent = fill_equal(&mut batch, Dest::Group, 10, 1000);
    send_all(&mut sender, &mut batch);
    assert_eq!(sender.offload_stats().gso_messages, 2);
    assert_eq!(
        sender.stats().datagrams_sent,
        20,
        "each copy of each segment counts"
    );
    for r in [&mut r1, &mut r2] {
        let got = recv_from(r, sender.local_addr(), sent.len());
        assert_same_datagrams("gso fan-out", sent.clone(), got);
    }
}

#[test]
fn truncated_datagram_is_a_counted_drop_never_passed_up() {
    let mut small = config(false, false);
    small.datagram_bytes_max = 100;
    let mut receiver = MmsgTransport::open(&small).unwrap();
    let mut sender = MmsgTransport::open(&config(false, false)).unwrap();
    let to = Dest::Addr(receiver.local_addr());
    let mut batch = SendBatch::new(4, 1472);
    batch.push(to, &[9u8; 500]).unwrap();
    batch.push(to, &[8u8; 100]).unwrap();
    send_all(&mut sender, &mut batch);
    let got = recv_from(&mut receiver, sender.local_addr(), 1);
    assert_eq!(got, vec![vec![8u8; 100]]);
    assert_eq!(receiver.stats().recv_dropped, 1);
}

#[test]
fn auto_choice_falls_back_to_a_working_driver() {
    let mut receiver = open(DriverChoice::Auto, &config(false, false)).unwrap();
    let mut sender = open(DriverChoice::Mmsg, &config(false, false)).unwrap();
    let mut batch = SendBatch::new(4, 1472);
    batch
        .push(Dest::Addr(receiver.local_addr()), b"auto")
        .unwrap();
    send_all(sender.as_mut(), &mut batch);
    let got = recv_from(receiver.as_mut(), sender.local_addr(), 1);
    assert_eq!(got, vec![b"auto".to_vec()]);
    eprintln!("DriverChoice::Auto picked {}", receiver.driver().name());
}

#[test]
fn a_refused_datagram_mid_batch_ends_the_send_there_and_errs_on_the_retry() {
    let mut receiver = MmsgTransport::open(&config(false, false)).unwrap();
    let mut sender = MmsgTransport::open(&config(false, false)).unwrap();
    let to = Dest::Addr(receiver.local_addr());
    // An IPv6 destination on an IPv4 socket: the kernel refuses that one message.
    let wrong_family = Dest::Addr("[::1]:9".parse().unwrap());
    let mut batch = SendBatch::new(8, 1472);
    batch.push(to, b"one").unwrap();
    batch.push(to, b"two").unwrap();
    batch.push(wrong_family, b"bad").unwrap();
    batch.push(to, b"four").unwrap();
    assert_eq!(
        sender.send(&batch).unwrap(),
        2,
        "the two before the refused one"
    );
    batch.consume(2);
    assert!(matches!(
        sender.send(&batch),
        Err(cohort_transport::TransportError::Io { op: "sendmmsg", .. })
    ));
    batch.consume(1);
    send_all(&mut sender, &mut batch);
    let got = recv_from(&mut receiver, sender.local_addr(), 3);
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
    );
}

#[test]
fn busy_poll_is_set_when_configured() {
    let mut cfg = config(false, false);
    cfg.busy_poll_us = Some(50);
    match MmsgTransport::open(&cfg) {
        Ok(t) => assert_eq!(t.opened().busy_poll_us, Some(50)),
        Err(e) => {
            eprintln!("!!!!! SO_BUSY_POLL refused here ({e}); needs CAP_NET_ADMIN");
            assert!(
                e.to_string().contains("SO_BUSY_POLL"),
                "the error names the option: {e}"
            );
        }
    }
}

#[test]
fn members_binding_the_group_port_itself_share_it_and_all_receive() {
    let group = cohort_transport::conformance::private_multicast_group();
    let mut member_cfg = config(false, false);
    member_cfg.bind = SocketAddr::from(([0, 0, 0, 0], group.port()));
    member_cfg.group = cohort_transport::GroupMode::Multicast {
        group,
        iface: std::net::Ipv4Addr::LOCALHOST,
        ttl: 1,
        loopback: true,
    };
    let mut a = MmsgTransport::open(&member_cfg).unwrap();
    let mut b = MmsgTransport::open(&member_cfg).expect("SO_REUSEPORT lets a second member bind");
    assert!(a.opened().group_socket.is_none(), "one socket does both");
    let mut sender_cfg = member_cfg.clone();
    sender_cfg.bind = "127.0.0.1:0".parse().unwrap();
    let mut sender = MmsgTransport::open(&sender_cfg).unwrap();
    let mut batch = SendBatch::new(4, 1472);
    batch.push(Dest::Group, b"to all").unwrap();
    send_all(&mut sender, &mut batch);
    for m in [&mut a, &mut b] {
        let got = recv_from(m, sender.local_addr(), 1);
        assert_eq!(got, vec![b"to all".to_vec()]);
    }
}
